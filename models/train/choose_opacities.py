"""Choose the opacities model among candidates by running pulmo itself on selection phantoms.

    choose_opacities.py --lobes-dir OUT --classifier-dir models/ --out OUT CANDIDATE_DIR...

Two runs of the same training code are not bit-identical, and their opacities models differ in
the errors the goals count (models/train/README.md, "Reproducing"). So `train-all` trains the
second phase of the opacities model several times from one first phase (--tune-seed) and keeps the
candidate that does best through `pulmo analyze` (the Rust path, with the manifest's
post-processing rules) on the selection phantoms: their own seeds, from SELECT_SEED_BASE, never
the held-out ones from EVAL_SEED_BASE that the model cards report.

The score counts the item-1 goals that the opacities model drives (opacity Dice, PLO error median
and 95th percentile, CTSS agreement), then breaks ties by the sum of the margins, each relative to
its goal. The classifier does not enter it: the candidates are scored with the classifier found in
--classifier-dir, since the new classifier is trained on the chosen opacities model's maps.
"""
import argparse
import json
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from evaluate import GOALS, run, summarise  # noqa: E402
from spec import SELECT_SEED_BASE  # noqa: E402


def margins(s):
    """Each goal's margin relative to the goal: positive when met."""
    return {
        "opacity_dice": s["opacity_dice"][0] / GOALS["opacity_dice"] - 1.0,
        "plo_median": 1.0 - s["plo_median"] / GOALS["plo_median"],
        "plo_p95": 1.0 - s["plo_p95"] / GOALS["plo_p95"],
        "ctss_agree": s["ctss_agree"] / GOALS["ctss_agree"] - 1.0,
    }


def score(s):
    m = margins(s)
    return (sum(v >= 0 for v in m.values()), sum(m.values()))


def evaluate_candidate(pulmo, lobes_dir, classifier_dir, candidate, seed_base, count):
    """The candidate's rows from evaluate.run, beside the lobes and classifier models given."""
    models = pathlib.Path(tempfile.mkdtemp())
    try:
        for src, name in ((lobes_dir, "lobes"), (candidate, "opacities"), (classifier_dir, "classifier")):
            for ext in ("onnx", "toml"):
                shutil.copy(pathlib.Path(src) / f"{name}.{ext}", models / f"{name}.{ext}")
        return run(pulmo, models, seed_base, count, label=f"{candidate} ")
    finally:
        shutil.rmtree(models, ignore_errors=True)


def main():
    root = pathlib.Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+", help="folders holding opacities.onnx and opacities.toml")
    ap.add_argument("--pulmo", default=str(root / "target" / "release" / "pulmo"))
    ap.add_argument("--lobes-dir", required=True, help="the folder of the lobes model the candidates were tuned on")
    ap.add_argument("--classifier-dir", default=str(root / "models"))
    ap.add_argument("--out", help="copy the chosen candidate's opacities.onnx and .toml here")
    ap.add_argument("--seed-base", type=int, default=SELECT_SEED_BASE)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--json", help="write every candidate's summary, score and studies here")
    a = ap.parse_args()
    results = []
    for c in a.candidates:
        t = time.time()
        rows = evaluate_candidate(a.pulmo, a.lobes_dir, a.classifier_dir, c, a.seed_base, a.count)
        s = summarise(rows)
        met, total = score(s)
        results.append({"candidate": c, "summary": s, "margins": margins(s), "score": (met, total),
                        "seconds": time.time() - t, "studies": rows})
        print(f"{c}: goals met {met} of 4, margin sum {total:+.3f}: opacity Dice "
              f"{s['opacity_dice'][0]:.3f}, PLO error median {s['plo_median']:.2f} / p95 {s['plo_p95']:.2f} pp, "
              f"CTSS equal {100 * s['ctss_agree']:.1f} % ({time.time() - t:.0f} s)", flush=True)
    best = max(results, key=lambda r: r["score"])
    print(f"chosen: {best['candidate']}", flush=True)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps({"seed_base": a.seed_base, "count": a.count,
                                                    "chosen": best["candidate"], "candidates": results},
                                                   indent=1) + "\n")
    if a.out and pathlib.Path(best["candidate"]).resolve() != pathlib.Path(a.out).resolve():
        for ext in ("onnx", "toml"):
            shutil.copy(pathlib.Path(best["candidate"]) / f"opacities.{ext}", pathlib.Path(a.out) / f"opacities.{ext}")


if __name__ == "__main__":
    main()
