"""Benchmark: time per stage and peak memory of `pulmo analyze` on a full-size phantom (CPU),
medians of RUNS runs (default 3). Run from the repository root after `make build`:

    build/venv/bin/python bench/analyze_stages.py [MODELS_DIR]

MODELS_DIR defaults to the test model set made by tests/py/make_models.py (tiny models: the figures
then measure pulmo's machinery, not a real network). Prints a Markdown table for BENCHMARKS.md."""
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

root = pathlib.Path(__file__).resolve().parent.parent
pulmo = root / "target/release/pulmo"
runs = int(os.environ.get("RUNS", "3"))
work = pathlib.Path(tempfile.mkdtemp())
try:
    if len(sys.argv) > 1:
        models = pathlib.Path(sys.argv[1]).resolve()
    else:
        subprocess.run([sys.executable, root / "tests/py/make_models.py", work / "models"], check=True,
                       capture_output=True)
        models = work / "models/set"
    (work / "pulmo.toml").write_text(f'[inference]\nmodels_dir = "{models}"\nexecution_providers = ["cpu"]\n')
    subprocess.run([pulmo, "phantom", "--out", work / "study", "--seed", "1", "--size", "full"], check=True,
                   capture_output=True)
    stages, rss, wall = {}, [], []
    for _ in range(runs):
        shutil.rmtree(work / "out", ignore_errors=True)
        r = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", work / "time", pulmo, "--config",
                            work / "pulmo.toml", "analyze", work / "study/dicom", "--out", work / "out"],
                           capture_output=True, text=True)
        if r.returncode not in (0, 3):
            sys.exit(r.stderr)
        w, m = (work / "time").read_text().split()[-2:]
        wall.append(float(w)); rss.append(int(m) / 1024)
        f = json.loads((work / "out/findings.json").read_text())
        for k, v in f["timings_s"].items():
            stages.setdefault(k, []).append(v)
    g = f["series"]["geometry"]
    print(f"Study: {g['columns']} × {g['rows']} × {g['slices']}; models: "
          + ", ".join(f"{m['name']} {m['version']}" for m in f["models"]) + f"; provider {f['execution_provider']}\n")
    print("| stage | seconds (median) |")
    print("| --- | --- |")
    order = ["read", "lobes_resample", "lobes_model", "lobes_back_to_source", "lung", "lobes_on_lung",
             "opacities_resample", "opacities_model", "opacities_back_to_source", "opacities_postprocess",
             "classifier", "thin_opacities", "measure"]
    for k in order + sorted(set(stages) - set(order) - {"lobes", "opacities"}):
        if k in stages:
            print(f"| {k} | {statistics.median(stages[k]):.2f} |")
    print(f"| whole command (wall) | {statistics.median(wall):.2f} |")
    print(f"\nPeak memory (max RSS): {statistics.median(rss):.0f} MiB. {runs} runs.")
finally:
    shutil.rmtree(work, ignore_errors=True)
