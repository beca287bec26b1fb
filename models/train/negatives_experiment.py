"""Experiment: a third opacities phase that shows the model what it confuses (not part of train-all).

    negatives_experiment.py STEPS --out DIR [--cache build/train-cache]

Measured on held-out phantoms (models/train/README.md), the shipped opacities model 1.1.0 both
misses the solid nodules (opacity Dice 0.28 on the nodules pattern: a 12 mm nodule at +13 HU came
back background) and calls the thick hilar vessels consolidation (components of 0.2-1.3 cm3 at
+30 HU deep in normal lungs), and in the small studies calls vessels that partial volume has made
ground-glass-dense (-450 to -550 HU) ground-glass: to the model a dense blob in the lung is a
vessel or a lesion by chance. Random opacity-centred patches rarely put a nodule or a vessel in
the middle. This phase starts from the shipped weights and centres a share of the patches on a
nodule voxel, and a share on a vessel (lung voxel denser than -300 HU outside any opacity, that
is, a hard negative); the rest are drawn as in the second phase.
"""
import argparse
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import data  # noqa: E402
import export  # noqa: E402
from nets import UNet3d  # noqa: E402
from train import (CONFIG, crop, jitter_mask, load, load_onnx_weights, one_of, predicted_lungs,  # noqa: E402
                   sample_patch, scale, seg_step)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def centred(study, centre, patch, rng, predicted_share):
    jitter = [int(rng.integers(-p // 4, p // 4 + 1)) for p in patch]
    start = [c - p // 2 + j for c, p, j in zip(centre, patch, jitter)]
    x = crop(study["ct"], start, patch, -1024)
    y = crop(study["opac"], start, patch, 0)
    if rng.random() < predicted_share:
        mask = crop(study["lung_pred"], start, patch, 0).astype(np.float32)
    else:
        mask = jitter_mask(crop(study["lobes"], start, patch, 0) > 0, rng)
    return np.stack([scale(x), mask]), y


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("steps", type=int)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default=str(ROOT / "build" / "train-cache"))
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--nodule-share", type=float, default=0.3)
    ap.add_argument("--vessel-share", type=float, default=0.3)
    ap.add_argument("--extra", help="first:last seeds of extra studies, 3 in 4 with nodules, the rest normal "
                                    "(cached under CACHE-extra)")
    a = ap.parse_args()
    cfg = CONFIG["opacities"]
    studies = load(a.cache, ["ct", "lobes", "opac"])
    lobes_onnx = str(ROOT / "models" / "lobes.onnx")
    predicted_lungs(studies, lobes_onnx, a.cache)
    if a.extra:
        seeds = data.seed_range(a.extra)
        extra_cache = pathlib.Path(a.cache + "-extra")
        extra_cache.mkdir(exist_ok=True)

        def plan(seed):
            r = np.random.default_rng(seed)
            return ("normal" if seed % 4 == 3 else "nodules", "moderate",
                    "small" if r.random() < 0.25 else "full", float(np.round(r.uniform(8.0, 35.0), 1)))

        data.plan = plan
        for seed in seeds:
            data.generate(str(ROOT / "target" / "release" / "pulmo"), seed, extra_cache)
        extra = load(extra_cache, ["ct", "lobes", "opac"], seeds=seeds)
        # Their lung masks beside them: the main cache's masks are per seed, and its seeds from 1200
        # on are plan()'s studies (train.py --extra-seeds), other CTs than these.
        predicted_lungs(extra, lobes_onnx, extra_cache)
        studies += extra
    nodules = [s for s in studies if s["meta"]["pattern"] == "nodules"]
    for s in studies:
        # Every 3rd candidate voxel is enough and keeps the index small.
        s["_nodule"] = np.flatnonzero(s["opac"].ravel()[::3]) * 3
        vessel = (s["lobes"] > 0) & (s["ct"] > -300) & (s["opac"] == 0)
        s["_vessel"] = np.flatnonzero(vessel.ravel()[::3]) * 3
    print(f"{len(nodules)} nodule studies; vessel voxels per study median "
          f"{int(np.median([len(s['_vessel']) for s in studies])) * 3}", flush=True)
    rng = np.random.default_rng(20261125)
    torch.manual_seed(91011)
    net = UNet3d(2, cfg["k"], cfg["widths"])
    load_onnx_weights(net, str(ROOT / "models" / "opacities.onnx"))
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.steps)
    t0 = time.time()
    running = None
    for step in range(a.steps):
        u = rng.random()
        if u < a.nodule_share and nodules:
            s = nodules[int(rng.integers(len(nodules)))]
            idx = s["_nodule"]
        elif u < a.nodule_share + a.vessel_share:
            s = studies[int(rng.integers(len(studies)))]
            idx = s["_vessel"]
        else:
            s, idx = studies[int(rng.integers(len(studies)))], None
        if idx is not None and len(idx):
            centre = one_of(idx, s["ct"].shape, rng)
            x, y = centred(s, centre, cfg["patch"], rng, cfg["predicted_share"])
        else:
            x, y = sample_patch(s, "opac", cfg["patch"], cfg["focus"], rng, lung=True,
                                predicted_share=cfg["predicted_share"])
        if rng.random() < 0.5:
            x, y = x[..., ::-1].copy(), y[..., ::-1].copy()
        now = seg_step(net, opt, sched, x, y, cfg["k"])
        running = now if running is None else 0.98 * running + 0.02 * now
        if step % 50 == 0 or step == a.steps - 1:
            print(f"negatives step {step} ce {running[0]:.4f} dice-loss {running[1]:.4f} "
                  f"{time.time() - t0:.0f}s", flush=True)
    net.eval()
    pathlib.Path(a.out).mkdir(parents=True, exist_ok=True)
    export.segmentation(net, "opacities", a.out, training_s=time.time() - t0, steps=a.steps,
                        channels=["ct", "lung"])


if __name__ == "__main__":
    main()
