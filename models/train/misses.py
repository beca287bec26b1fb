"""Where the opacities model's false positives are, and whether post-processing could remove them.

    evaluate --seed-base 800000 --count 28 --keep DIR     # tuning studies, not the held-out set
    misses.py DIR [--opacities models/opacities.onnx]

For each kept study (phantom + pulmo's masks) it prints the false-positive components (size, HU,
depth in the lung, inscribed radius, elongation); then the CTSS agreement and opacity Dice that
three post-processings would give: dropping opacity components under a minimum volume, or thinner
than a minimum inscribed radius (the largest ball that fits in the component, in in-plane voxels:
vessel-like; also with a floor in mm), both on pulmo's masks, CT grid; and a stricter decision than
the argmax (foreground probability over a threshold, the model run again as pulmo runs it, on the
model grid). Needs scipy (in requirements.txt).
"""
import argparse
import pathlib
import sys

import numpy as np
import onnxruntime as ort
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from data import read_ct, read_labels, resample_linear, resample_nearest, seg_dims  # noqa: E402
from spec import OPACITIES_MIN_RADIUS_VOXELS, OPACITIES_PATCH, SEG_OVERLAP  # noqa: E402
from train import blend_like_pulmo  # noqa: E402

VOLUMES_MM3 = [0, 30, 100, 300]
RADII_VOXELS = [0, 1.5, 2.5]
# The shipped rule (OPACITIES_MIN_RADIUS_VOXELS) with a floor in mm as well, which only full-size
# studies (0.7 mm pixels) feel; on masks pulmo has already filtered it gives the same figures.
FLOORS_MM = [0, 2.5, 3, 3.5, 4]
THRESHOLDS = [0.5, 0.8, 0.9, 0.98]


def ctss(p):
    return 0 if p <= 0 else 1 if p < 5 else 2 if p <= 25 else 3 if p <= 50 else 4 if p <= 75 else 5


def score(found, lobes, truth, truth_lobes, tally):
    """Add one study's CTSS agreement (clean lobes, others) and, if it has opacities, its opacity
    Dice to `tally` (three lists)."""
    for k in range(1, 6):
        pf = 100 * (found & (lobes == k)).sum() / max((lobes == k).sum(), 1)
        pt = 100 * (truth & (truth_lobes == k)).sum() / max((truth_lobes == k).sum(), 1)
        tally[0 if ctss(pt) == 0 else 1].append(ctss(pf) == ctss(pt))
    if truth.any():
        tally[2].append(2 * (found & truth).sum() / (found.sum() + truth.sum()))


def table(keys):
    """Per setting: CTSS agreement of clean lobes, of the others, opacity Dice per study."""
    return {k: ([], [], []) for k in keys}


def elongation(mask, spacing):
    """Square root of the ratio of the two largest variances of the component's voxel positions (mm):
    1 for a ball, large for a tube."""
    pts = np.argwhere(mask) * np.asarray(spacing)
    if len(pts) < 4:
        return 1.0
    ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))[::-1]
    return float(np.sqrt(ev[0] / max(ev[1], 1e-9)))


def report(name, tallies):
    for key, (clean, other, dices) in tallies.items():
        print(f"{name} {key}: CTSS equal {100 * (sum(clean) + sum(other)) / (len(clean) + len(other)):.1f} % "
              f"(clean lobes {sum(clean)} / {len(clean)}, others {sum(other)} / {len(other)}), "
              f"opacity Dice {np.mean(dices):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("keep")
    ap.add_argument("--opacities", default=str(pathlib.Path(__file__).resolve().parents[1] / "opacities.onnx"))
    a = ap.parse_args()
    session = ort.InferenceSession(a.opacities, providers=["CPUExecutionProvider"])
    by_volume, by_radius, by_floor = table(VOLUMES_MM3), table(RADII_VOXELS), table(FLOORS_MM)
    by_threshold = table(THRESHOLDS)
    for d in sorted(pathlib.Path(a.keep).iterdir()):
        hu, spacing = read_ct(d / "study" / "dicom")
        found = read_labels(d / "out" / "opacities.nii.gz") > 0
        lobes = read_labels(d / "out" / "lobes.nii.gz")
        truth = read_labels(d / "study" / "truth" / "opacities.nii.gz") > 0
        truth_lobes = read_labels(d / "study" / "truth" / "lobes.nii.gz")
        voxel = float(np.prod(spacing))
        depth = ndimage.distance_transform_edt(lobes > 0, sampling=spacing)
        comps, n = ndimage.label(found)
        idx = range(1, n + 1)
        size = np.asarray(ndimage.sum(found, comps, idx))
        hits = np.asarray(ndimage.sum(truth, comps, idx))
        radius = np.asarray(ndimage.maximum(ndimage.distance_transform_edt(found, sampling=spacing),
                                            comps, idx)) if n else np.zeros(0)
        fp = [(s * voxel, m, dm, r, i) for i, (s, h, m, dm, r) in enumerate(
            zip(size, hits, ndimage.mean(hu, comps, idx), ndimage.maximum(depth, comps, idx), radius), 1)
            if h == 0]
        fp.sort(reverse=True)
        boxes = ndimage.find_objects(comps)
        print(f"{d.name}: {len(fp)} false-positive components, largest "
              + ", ".join(f"{v:.0f} mm3 at {m:.0f} HU, {dm:.0f} mm deep, radius {r:.1f} mm, elongation "
                          f"{elongation(comps[boxes[i - 1]] == i, spacing):.1f}" for v, m, dm, r, i in fp[:3]),
              flush=True)
        def keep(components, tally):
            score(np.concatenate([[False], components])[comps], lobes, truth, truth_lobes, tally)

        pixel = min(spacing[1:])
        for v in VOLUMES_MM3:
            keep(size * voxel >= v, by_volume[v])
        for r in RADII_VOXELS:
            keep(radius >= r * pixel - 1e-6, by_radius[r])
        for f in FLOORS_MM:
            keep(radius >= max(OPACITIES_MIN_RADIUS_VOXELS * pixel, f) - 1e-6, by_floor[f])
        dims = seg_dims(hu.shape, spacing)
        ct = np.round(resample_linear(hu, dims)).astype(np.int16)
        grid_lobes = resample_nearest(lobes, dims)
        lung = grid_lobes > 0
        acc, wsum = blend_like_pulmo(session, ct, lung, OPACITIES_PATCH, SEG_OVERLAP)
        fg = np.where((wsum > 0) & lung, 1.0 - acc[0] / np.maximum(wsum, 1e-6), 0.0)
        grid_truth = resample_nearest(truth.astype(np.uint8), dims) > 0
        grid_truth_lobes = resample_nearest(truth_lobes, dims)
        for t in THRESHOLDS:
            score(fg > t, grid_lobes, grid_truth, grid_truth_lobes, by_threshold[t])
    report("minimum component volume (mm3, CT grid)", by_volume)
    report("minimum inscribed radius (in-plane voxels, CT grid)", by_radius)
    report(f"minimum inscribed radius {OPACITIES_MIN_RADIUS_VOXELS} in-plane voxels and at least (mm)", by_floor)
    report("foreground probability over (model grid)", by_threshold)


if __name__ == "__main__":
    main()
