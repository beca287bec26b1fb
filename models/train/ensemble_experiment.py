"""Experiment: several opacities models as one ONNX file whose output is their mean probability
(not part of train-all).

    ensemble_experiment.py OUT_DIR MEMBER.onnx MEMBER.onnx...

Two second phases of one first phase differ in which goals they miss (README.md, "Choosing among
candidates"). If their errors were independent, the mean of their softmax would keep what they
agree on and drop what one of them alone finds. The file's output is log(mean probability), so
that pulmo's softmax gives back the mean probability itself; its manifest is the shipped recipe's.
Tried on 2026-12-04 with the three second phases of the 2026-12-03 run (README.md, "Hard examples
in the second phase"): no better than its best member, so not used.
"""
import argparse
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import export  # noqa: E402
from nets import UNet3d  # noqa: E402
from train import CONFIG, load_onnx_weights  # noqa: E402


class Ensemble(torch.nn.Module):
    def __init__(self, nets):
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)

    def forward(self, x):
        p = torch.stack([torch.softmax(n(x), 1) for n in self.nets]).mean(0)
        return torch.log(p.clamp_min(1e-7))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("members", nargs="+", help="opacities.onnx files of one architecture (train.py's)")
    a = ap.parse_args()
    cfg = CONFIG["opacities"]
    nets = []
    for f in a.members:
        net = UNet3d(2, cfg["k"], cfg["widths"])
        load_onnx_weights(net, f)
        nets.append(net.eval())
    export.segmentation(Ensemble(nets).eval(), "opacities", a.out, training_s=0, steps=0,
                        channels=["ct", "lung"])
