"""Experiment: which small found opacities are a vessel (the simulation behind opacities 1.4.0's
`[output.vessel_opacities]`; not part of train-all).

    evaluate --seed-base 800000 --count 28 --keep DIR       # tuning studies, not the held-out set
    vessel_experiment.py DIR                                # needs scipy (requirements.txt)

For each kept study (phantom + pulmo's masks, which `evaluate --keep` stores under DIR/SEED/out) it
labels pulmo's opacities in 6-connected components and measures each as src/infer/vessel_opacities.rs
does: the radius of the largest ball that fits (mm), and the vessel share, the part of its voxels
that belong to dense lung (pulmo's lobes, above --dense HU; 6-connected structures) lying more
outside the component than inside. Then, for each maximum radius and minimum share, it drops the
components the rule would drop and prints the opacity Dice (studies with opacities), the per-lobe PLO
error (median, 95th percentile), the CTSS agreement, computed as `evaluate` computes them, and how
many dropped components were true findings (at least 20 % of their voxels opacity in truth) and how
many false findings are left.
"""
import argparse
import json
import pathlib
import sys

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from data import read_ct, read_labels  # noqa: E402

LOBES = ["RUL", "RML", "RLL", "LUL", "LLL"]
RADII = [None, 5.0, 6.0, 7.0, 7.5, 8.0, 9.0, 10.0]
SHARES = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3]


def ctss(p):
    """The per-lobe CT severity score of a PLO percentage (as misses.py and pulmo's quant)."""
    return 0 if p <= 0 else 1 if p < 5 else 2 if p <= 25 else 3 if p <= 50 else 4 if p <= 75 else 5


def components(hu, spacing, found, lobes, truth_op, dense_hu):
    """Per found component: radius (mm), vessel share, voxels per lobe, voxels true, size."""
    six = ndimage.generate_binary_structure(3, 1)
    comp, n = ndimage.label(found, six)
    dense, _ = ndimage.label((lobes > 0) & (hu > dense_hu), six)
    dense_size = np.bincount(dense.ravel())
    depth = ndimage.distance_transform_edt(found, sampling=spacing)
    rows = []
    for c, box in enumerate(ndimage.find_objects(comp), start=1):
        m = comp[box] == c
        inside = np.bincount(dense[box][m], minlength=len(dense_size))
        inside[0] = 0
        through = (inside > 0) & (dense_size - inside >= inside)
        rows.append({"radius": float(depth[box][m].max()), "share": float(inside[through].sum()) / int(m.sum()),
                     "lobe": np.bincount(lobes[box][m], minlength=6)[1:], "true": int(truth_op[box][m].sum()),
                     "size": int(m.sum())})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir")
    ap.add_argument("--out-name", default="out", help="pulmo's output folder in each study")
    ap.add_argument("--dense", type=float, default=-300.0, help="dense lung above this (HU)")
    a = ap.parse_args()
    studies = []
    for st in sorted(p for p in pathlib.Path(a.dir).iterdir() if (p / a.out_name).is_dir()):
        hu, spacing = read_ct(st / "study/dicom")
        truth_op = read_labels(st / "study/truth/opacities.nii.gz") > 0
        found = read_labels(st / a.out_name / "opacities.nii.gz") > 0
        lobes = read_labels(st / a.out_name / "lobes.nii.gz")
        studies.append({
            "truth": json.loads((st / "study/truth/truth.json").read_text())["lobes"],
            "lobe_n": np.array([max(1, int((lobes == k + 1).sum())) for k in range(5)]),
            "found_lobe": np.array([int((found & (lobes == k + 1)).sum()) for k in range(5)]),
            "truth_n": int(truth_op.sum()), "found_n": int(found.sum()), "both": int((truth_op & found).sum()),
            "parts": components(hu, spacing, found, lobes, truth_op, a.dense),
        })
        print(st.name, "done", file=sys.stderr, flush=True)
    print("| max radius | min vessel share | opacity Dice | PLO error median / p95 | CTSS | true findings dropped "
          "| false findings left |")
    print("|---|---|---|---|---|---|---|")
    for radius in RADII:
        for share in SHARES if radius is not None else [None]:
            dice, err, agree, lost, left = [], [], [], 0, 0
            for s in studies:
                dropped = [radius is not None and p["radius"] < radius and p["share"] >= share for p in s["parts"]]
                drop = [p for p, d in zip(s["parts"], dropped) if d]
                lost += sum(p["true"] >= 0.2 * p["size"] for p in drop)
                left += sum(p["true"] < 0.2 * p["size"] for p, d in zip(s["parts"], dropped) if not d)
                per_lobe = s["found_lobe"] - sum((p["lobe"] for p in drop), np.zeros(5, int))
                for k, lobe in enumerate(LOBES):
                    pf = 100 * per_lobe[k] / s["lobe_n"][k]
                    err.append(abs(pf - s["truth"][lobe]["plo_percent"]))
                    agree.append(ctss(pf) == s["truth"][lobe]["ctss"])
                if s["truth_n"]:
                    both = s["both"] - sum(p["true"] for p in drop)
                    dice.append(2 * both / (s["truth_n"] + s["found_n"] - sum(p["size"] for p in drop)))
            print(f"| {radius or '-'} | {share or '-'} | {np.mean(dice):.3f} | {np.median(err):.2f} / "
                  f"{np.percentile(err, 95):.2f} pp | {100 * np.mean(agree):.1f} % | {lost} | {left} |")


if __name__ == "__main__":
    main()
