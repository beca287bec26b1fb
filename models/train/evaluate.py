"""Evaluate a model set through pulmo itself (`pulmo analyze --masks`: the Rust path with ONNX
Runtime, not the training framework) on held-out phantoms whose seeds training never saw.

Prints a Markdown table (the one in the model cards) and writes every per-study number as JSON.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import nibabel
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from data import is_covid  # noqa: E402
from spec import CLASSIFIER_SEEDS, EVAL_SEED_BASE, TRAIN_SEEDS  # noqa: E402

LOBES = ["RUL", "RML", "RLL", "LUL", "LLL"]
CASES = [("covid", "moderate"), ("covid", "severe"), ("covid", "critical"), ("covid", "mild"),
         ("lobar", "moderate"), ("nodules", "moderate"), ("normal", "moderate")]
# The acceptance thresholds.
GOALS = {"lobe_dice": 0.95, "opacity_dice": 0.85, "plo_median": 1.0, "plo_p95": 3.0,
         "ctss_agree": 0.90, "auc": 0.95}


def case(i):
    """Pattern, severity, size and noise of held-out study i: every case at both sizes."""
    pattern, severity = CASES[i % len(CASES)]
    size = "full" if i % 2 == 0 else "small"
    noise = 10.0 + (i * 7.3) % 22.0
    return pattern, severity, size, round(noise, 1)


def labels(path):
    return np.asarray(nibabel.load(str(path)).dataobj).astype(np.uint8)


def dice(a, b):
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def auc(scores, truth):
    """Mann-Whitney AUC, ties counted half."""
    pos = [s for s, t in zip(scores, truth) if t]
    neg = [s for s, t in zip(scores, truth) if not t]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def one(pulmo, config, seed, i, keep):
    pattern, severity, size, noise = case(i)
    tmp = pathlib.Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        subprocess.run([pulmo, "phantom", "--out", str(tmp / "study"), "--seed", str(seed), "--size", size,
                        "--pattern", pattern, "--severity", severity, "--noise", str(noise)],
                       check=True, stdout=subprocess.DEVNULL)
        t = time.time()
        r = subprocess.run([pulmo, "--config", str(config), "analyze", str(tmp / "study" / "dicom"),
                            "--out", str(tmp / "out"), "--masks"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        wall = time.time() - t
        if r.returncode not in (0, 3):
            raise SystemExit(f"pulmo analyze failed on seed {seed}: {r.stderr[-2000:]}")
        truth = json.loads((tmp / "study" / "truth" / "truth.json").read_text())
        found = json.loads((tmp / "out" / "findings.json").read_text())
        tl, pl = labels(tmp / "study" / "truth" / "lobes.nii.gz"), labels(tmp / "out" / "lobes.nii.gz")
        to, po = labels(tmp / "study" / "truth" / "opacities.nii.gz"), labels(tmp / "out" / "opacities.nii.gz")
        row = {
            "seed": seed, "pattern": pattern, "severity": severity, "size": size, "noise": noise,
            "covid_truth": is_covid(pattern, severity), "covid_probability": found["covid_probability"],
            "lobe_dice": {lobe: dice(tl == k + 1, pl == k + 1) for k, lobe in enumerate(LOBES)},
            "has_opacity": bool((to > 0).any()),
            "opacity_dice": dice(to > 0, po > 0),
            "plo_truth": {lobe: truth["lobes"][lobe]["plo_percent"] for lobe in LOBES},
            "plo_found": {lobe: found["lobes"][lobe]["plo_percent"] for lobe in LOBES},
            "ctss_truth": {lobe: truth["lobes"][lobe]["ctss"] for lobe in LOBES},
            "ctss_found": {lobe: found["lobes"][lobe]["ctss"] for lobe in LOBES},
            "qc_passed": found["qc_passed"],
            "analyze_s": wall,
            "models_s": sum(found["timings_s"].get(k, 0.0) for k in ("lobes", "opacities", "classifier")),
        }
        if keep:
            shutil.copytree(tmp, pathlib.Path(keep) / str(seed), dirs_exist_ok=True)
        return row
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summarise(rows):
    s = {}
    for lobe in LOBES:
        d = [r["lobe_dice"][lobe] for r in rows]
        s[f"dice_{lobe}"] = (float(np.mean(d)), float(np.min(d)))
    op = [r["opacity_dice"] for r in rows if r["has_opacity"]]
    s["opacity_dice"] = (float(np.mean(op)) if op else float("nan"), float(np.min(op)) if op else float("nan"))
    err = [abs(r["plo_found"][lobe] - r["plo_truth"][lobe]) for r in rows for lobe in LOBES]
    s["plo_median"] = float(np.median(err))
    s["plo_p95"] = float(np.percentile(err, 95))
    agree = [r["ctss_found"][lobe] == r["ctss_truth"][lobe] for r in rows for lobe in LOBES]
    s["ctss_agree"] = float(np.mean(agree))
    s["auc"] = auc([r["covid_probability"] for r in rows], [r["covid_truth"] for r in rows])
    for size in ("full", "small"):
        t = [r["analyze_s"] for r in rows if r["size"] == size]
        m = [r["models_s"] for r in rows if r["size"] == size]
        s[f"runtime_{size}"] = (float(np.median(t)) if t else float("nan"), float(np.median(m)) if m else float("nan"))
    return s


def breakdown(rows):
    """Where the misses are: opacity Dice per case, and CTSS agreement split by the truth's score
    (a lobe with no opacity is scored 0 only if not one voxel is found in it)."""
    lines = ["| case | studies | opacity Dice (mean) | CTSS equal, truth 0 | CTSS equal, truth > 0 |",
             "|---|---|---|---|---|"]
    for pattern, severity in CASES:
        rs = [r for r in rows if (r["pattern"], r["severity"]) == (pattern, severity)]
        if not rs:
            continue
        op = [r["opacity_dice"] for r in rs if r["has_opacity"]]
        cells = []
        for zero in (True, False):
            agree = [r["ctss_found"][lb] == r["ctss_truth"][lb] for r in rs for lb in LOBES
                     if (r["ctss_truth"][lb] == 0) == zero]
            cells.append(f"{sum(agree)} / {len(agree)}" if agree else "-")
        lines.append(f"| {pattern} {severity} | {len(rs)} | {f'{np.mean(op):.3f}' if op else '-'} | "
                     f"{cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def table(s, n, seed_base=EVAL_SEED_BASE):
    ok = lambda good: "yes" if good else "**no**"  # noqa: E731
    lines = [f"Held-out phantoms: {n} (seeds from {seed_base}; training used "
             f"{TRAIN_SEEDS.start}-{TRAIN_SEEDS.stop - 1} for the segmentation models and "
             f"{CLASSIFIER_SEEDS.start}-{CLASSIFIER_SEEDS.stop - 1} for the classifier), "
             "evaluated through `pulmo analyze`.", "",
             "| metric | value | goal | met |", "|---|---|---|---|"]
    for lobe in LOBES:
        mean, low = s[f"dice_{lobe}"]
        lines.append(f"| Dice {lobe} (mean, min) | {mean:.3f}, {low:.3f} | ≥ {GOALS['lobe_dice']} | "
                     f"{ok(mean >= GOALS['lobe_dice'])} |")
    mean, low = s["opacity_dice"]
    lines.append(f"| opacity Dice, studies with opacities (mean, min) | {mean:.3f}, {low:.3f} | "
                 f"≥ {GOALS['opacity_dice']} | {ok(mean >= GOALS['opacity_dice'])} |")
    lines.append(f"| per-lobe PLO absolute error, median | {s['plo_median']:.2f} pp | ≤ {GOALS['plo_median']} | "
                 f"{ok(s['plo_median'] <= GOALS['plo_median'])} |")
    lines.append(f"| per-lobe PLO absolute error, 95th percentile | {s['plo_p95']:.2f} pp | ≤ {GOALS['plo_p95']} | "
                 f"{ok(s['plo_p95'] <= GOALS['plo_p95'])} |")
    lines.append(f"| CTSS equal to truth (lobes) | {100 * s['ctss_agree']:.1f} % | ≥ {100 * GOALS['ctss_agree']:.0f} % | "
                 f"{ok(s['ctss_agree'] >= GOALS['ctss_agree'])} |")
    lines.append(f"| classifier AUC | {s['auc']:.3f} | ≥ {GOALS['auc']} | {ok(s['auc'] >= GOALS['auc'])} |")
    for size in ("full", "small"):
        total, models = s[f"runtime_{size}"]
        lines.append(f"| runtime, {size} study (median: analyze, of which models) | {total:.1f} s, {models:.1f} s | | |")
    return "\n".join(lines)


def run(pulmo, models, seed_base, count, keep=None, label=""):
    """Every study's row, `pulmo analyze` given the model folder `models`; one line per study on
    stderr (after `label`)."""
    work = pathlib.Path(tempfile.mkdtemp())
    try:
        config = work / "pulmo.toml"
        config.write_text(f'[inference]\nmodels_dir = "{pathlib.Path(models).resolve()}"\n')
        rows = []
        for i in range(count):
            seed = seed_base + i
            rows.append(one(pulmo, config, seed, i, keep))
            r = rows[-1]
            print(f"{label}{seed} {r['pattern']:<8} {r['severity']:<9} {r['size']:<5} lobe Dice "
                  f"{' '.join(f'{v:.3f}' for v in r['lobe_dice'].values())} opacity Dice {r['opacity_dice']:.3f} "
                  f"p={r['covid_probability']:.3f} {r['analyze_s']:.1f}s", file=sys.stderr, flush=True)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    root = pathlib.Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pulmo", default=str(root / "target" / "release" / "pulmo"))
    ap.add_argument("--models", default=str(root / "models"))
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--seed-base", type=int, default=EVAL_SEED_BASE,
                    help="first seed; anything but the default is for tuning post-processing away "
                         "from the held-out set the cards report")
    ap.add_argument("--json", help="write every per-study number here")
    ap.add_argument("--keep", help="keep each study and pulmo's outputs under this folder")
    a = ap.parse_args()
    rows = run(a.pulmo, a.models, a.seed_base, a.count, a.keep)
    s = summarise(rows)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps({"summary": s, "studies": rows}, indent=1) + "\n")
    print(table(s, len(rows), a.seed_base))
    print()
    print(breakdown(rows))


if __name__ == "__main__":
    main()
