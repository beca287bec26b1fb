"""Experiment: what carrying the opacities out to the edge the CT shows would do (the simulation
behind opacities 1.3.0's `[output.opacity_edge]`; not part of train-all).

    evaluate --seed-base 800000 --count 14 --keep DIR       # tuning studies, not the held-out set
    opacity_edge_experiment.py DIR                          # needs scipy (requirements.txt)

For each kept study (phantom + pulmo's masks, which `evaluate --keep` stores under DIR/SEED/out)
it applies each variant to pulmo's opacity mask on the CT grid: remove found voxels lighter than a
threshold, and/or grow the opacities through the lung (pulmo's lobes mask) into voxels at least as
dense as a threshold, by geodesic dilation in the slice (4-connected) or in 3D (6-connected). Then
it prints, per variant, the opacity Dice (studies with opacities), the per-lobe PLO error (median,
95th percentile) and the CTSS agreement, computed as `evaluate` computes them, sorted by the 95th
percentile. Growth counts pixels here; pulmo's rule counts millimetres (`reach_mm`), which is the
same on one grid size.
"""
import argparse
import itertools
import json
import pathlib
import sys

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from data import read_ct, read_labels  # noqa: E402

LOBES = ["RUL", "RML", "RLL", "LUL", "LLL"]


def ctss(p):
    """The per-lobe CT severity score of a PLO percentage (as misses.py and pulmo's quant)."""
    return 0 if p <= 0 else 1 if p < 5 else 2 if p <= 25 else 3 if p <= 50 else 4 if p <= 75 else 5
TRIMS = [None, -820, -800, -780]
GROWS = [None] + [(hu, n, d) for hu in (-760, -730, -700, -670, -640, -600) for n in (1, 2, 3, 4)
                  for d in ("slice", "3d")]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir")
    ap.add_argument("--out-name", default="out", help="pulmo's output folder in each study")
    a = ap.parse_args()
    res = {}
    for st in sorted(p for p in pathlib.Path(a.dir).iterdir() if (p / a.out_name).is_dir()):
        hu, _ = read_ct(st / "study/dicom")
        truth_op = read_labels(st / "study/truth/opacities.nii.gz") > 0
        found = read_labels(st / a.out_name / "opacities.nii.gz") > 0
        lobes = read_labels(st / a.out_name / "lobes.nii.gz")
        truth = json.loads((st / "study/truth/truth.json").read_text())
        lobe_n = [max(1, int((lobes == k + 1).sum())) for k in range(5)]
        for trim, grow in itertools.product(TRIMS, GROWS):
            p = found.copy()
            if trim is not None:
                p &= hu >= trim
            if grow is not None and p.any():
                dense, n, how = grow
                el = ndimage.generate_binary_structure(3, 1)
                if how == "slice":
                    el[0] = 0
                    el[2] = 0
                p = ndimage.binary_dilation(p, structure=el, iterations=n, mask=(lobes > 0) & (hu >= dense))
            r = res.setdefault((trim, grow), {"dice": [], "err": [], "ctss": []})
            if truth_op.any():
                r["dice"].append(2 * (truth_op & p).sum() / (truth_op.sum() + p.sum()))
            for k, lobe in enumerate(LOBES):
                pf = 100 * (p & (lobes == k + 1)).sum() / lobe_n[k]
                r["err"].append(abs(pf - truth["lobes"][lobe]["plo_percent"]))
                r["ctss"].append(ctss(pf) == truth["lobes"][lobe]["ctss"])
        print(st.name, "done", file=sys.stderr, flush=True)
    rows = sorted(((k, np.mean(r["dice"]), np.median(r["err"]), np.percentile(r["err"], 95), np.mean(r["ctss"]))
                   for k, r in res.items()), key=lambda x: x[3])
    print("| remove lighter than | grow into | opacity Dice | PLO error median / p95 | CTSS |")
    print("|---|---|---|---|---|")
    for (trim, grow), d, m, p95, c in rows:
        g = "-" if grow is None else f">= {grow[0]} HU, {grow[1]} ({grow[2]})"
        print(f"| {trim if trim is not None else '-'} | {g} | {d:.3f} | {m:.2f} / {p95:.2f} pp | {100 * c:.1f} % |")


if __name__ == "__main__":
    main()
