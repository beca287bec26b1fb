"""Benchmark: what dropping thin opacity components costs `pulmo analyze` (CPU). The shipped
models run twice per study, interleaved: with the opacities manifest as shipped and with
`min_inscribed_radius_voxels` taken out of it. Full-size phantoms (seed 1) at two COVID-19
severities; medians of RUNS runs (default 3). Run from the repository root after `make build`:

    build/venv/bin/python bench/thin_opacities.py

Prints a Markdown table for BENCHMARKS.md."""
import json
import os
import pathlib
import re
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
    variants = {}
    for name, keep in (("without", False), ("with", True)):
        models = work / f"models-{name}"
        models.mkdir()
        for f in root.glob("models/*.onnx"):
            (models / f.name).symlink_to(f)
        for f in root.glob("models/*.toml"):
            text = f.read_text()
            if not keep:
                text = re.sub(r"(?m)^min_inscribed_radius_voxels = .*\n", "", text)
            (models / f.name).write_text(text)
        cfg = work / f"{name}.toml"
        cfg.write_text(f'[inference]\nmodels_dir = "{models}"\nexecution_providers = ["cpu"]\n')
        variants[name] = cfg
    print("| study | wall without / with (median) | max RSS without / with (median) | filter stage (median) |")
    print("| --- | --- | --- | --- |")
    for severity in ("critical", "moderate"):
        study = work / f"study-{severity}"
        subprocess.run([pulmo, "phantom", "--out", study, "--seed", "1", "--size", "full",
                        "--severity", severity], check=True, capture_output=True)
        wall, rss, stage = {"without": [], "with": []}, {"without": [], "with": []}, []
        for _ in range(runs):
            for name, cfg in variants.items():
                shutil.rmtree(work / "out", ignore_errors=True)
                r = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", work / "time", pulmo, "--config", cfg,
                                    "analyze", study / "dicom", "--out", work / "out"], capture_output=True, text=True)
                if r.returncode not in (0, 3):
                    sys.exit(r.stderr)
                w, m = (work / "time").read_text().split()[-2:]
                wall[name].append(float(w))
                rss[name].append(int(m) / 1024)
                timings = json.loads((work / "out/findings.json").read_text())["timings_s"]
                if name == "with":
                    stage.append(timings["thin_opacities"])
                elif "thin_opacities" in timings:
                    sys.exit("the manifest without the filter still filtered")
        g = json.loads((work / "out/findings.json").read_text())["series"]["geometry"]
        med = statistics.median
        print(f"| COVID-19 {severity}, {g['columns']} × {g['rows']} × {g['slices']} | "
              f"{med(wall['without']):.2f} / {med(wall['with']):.2f} s | "
              f"{med(rss['without']):.0f} / {med(rss['with']):.0f} MiB | {med(stage):.2f} s |", flush=True)
    print(f"\n{runs} runs of each, interleaved.")
finally:
    shutil.rmtree(work, ignore_errors=True)
