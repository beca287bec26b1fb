"""Benchmark: what one post-processing rule of a shipped manifest costs `pulmo analyze` (CPU).
The shipped models run twice per study, interleaved: with the manifests as shipped and with the
rule taken out. Rules: `thin_opacities` (the opacities manifest's `min_inscribed_radius_voxels`),
`lung_border` (the lobes manifest's `[output.lung_border]`), `opacity_edge` (the opacities
manifest's `[output.opacity_edge]`), `vessel_opacities` (its `[output.vessel_opacities]`),
`ground_glass_iqr` (the vessel rule's `max_ground_glass_iqr_hu`), `fissure_surface` (the lobes
manifest's `[output.fissure_surface]`) and `surface_refine` (that table's refinement of the
oblique fissures and the horizontal fissure's leaving out of dense voxels, lobes 1.6.0).
Full-size phantoms (seed 1) at two COVID-19 severities; medians of RUNS runs (default 3). Run from the repository root after
`make build`:

    build/venv/bin/python bench/manifest_rule.py thin_opacities|lung_border|opacity_edge|vessel_opacities|ground_glass_iqr|fissure_surface|surface_refine

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
# Per rule: what takes it out of a manifest, and the findings.json stage that holds its cost.
RULES = {
    "thin_opacities": (r"(?m)^min_inscribed_radius_voxels = .*\n", "thin_opacities"),
    "lung_border": (r"(?ms)^\[output\.lung_border\]\n.*?\n\n", "lobes_back_to_source"),
    "opacity_edge": (r"(?ms)^\[output\.opacity_edge\]\n.*?\n\n", "opacity_edge"),
    "vessel_opacities": (r"(?ms)^\[output\.vessel_opacities\]\n.*?\n\n", "vessel_opacities"),
    "ground_glass_iqr": (r"(?m)^max_ground_glass_iqr_hu = .*\n", "vessel_opacities"),
    "fissure_surface": (r"(?ms)^\[output\.fissure_surface\]\n.*?\n\n", "fissure_surface"),
    "surface_refine": (r"(?m)^refine_mm = .*\nrefine_smooth_mm = .*\nhorizontal_skips_dense = .*\n",
                       "fissure_surface"),
}
if len(sys.argv) != 2 or sys.argv[1] not in RULES:
    sys.exit(f"usage: manifest_rule.py {'|'.join(RULES)}")
strip, stage_name = RULES[sys.argv[1]]
work = pathlib.Path(tempfile.mkdtemp())
try:
    variants = {}
    for name, keep in (("without", False), ("with", True)):
        models = work / f"models-{name}"
        models.mkdir()
        for f in root.glob("models/*.onnx"):
            (models / f.name).symlink_to(f)
        stripped = 0
        for f in root.glob("models/*.toml"):
            text = f.read_text()
            stripped += len(re.findall(strip, text))
            if not keep:
                text = re.sub(strip, "", text)
            (models / f.name).write_text(text)
        if stripped != 1:
            sys.exit(f"{sys.argv[1]} is in {stripped} shipped manifests, not one")
        cfg = work / f"{name}.toml"
        cfg.write_text(f'[inference]\nmodels_dir = "{models}"\nexecution_providers = ["cpu"]\n')
        variants[name] = cfg
    print(f"| study | wall without / with (median) | max RSS without / with (median) | {stage_name} without / with (median) |")
    print("| --- | --- | --- | --- |")
    cases = {"fissure_surface": (("normal", "moderate", 1), ("covid", "critical", 1)),
             "surface_refine": (("normal", "moderate", 1), ("covid", "critical", 1))}.get(
        sys.argv[1], (("covid", "critical", 1), ("covid", "moderate", 1)))
    for pattern, severity, seed in cases:
        study = work / f"study-{pattern}-{severity}-{seed}"
        subprocess.run([pulmo, "phantom", "--out", study, "--seed", str(seed), "--size", "full",
                        "--pattern", pattern, "--severity", severity], check=True, capture_output=True)
        wall, rss, stage = ({"without": [], "with": []} for _ in range(3))
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
                if stage_name in timings:
                    stage[name].append(timings[stage_name])
        g = json.loads((work / "out/findings.json").read_text())["series"]["geometry"]
        med = statistics.median
        what = {"covid": f"COVID-19 {severity}", "lobar": "lobar pneumonia"}.get(pattern, f"{pattern} lungs")
        what += "" if seed == 1 else f" (seed {seed})"
        print(f"| {what}, {g['columns']} × {g['rows']} × {g['slices']} | "
              f"{med(wall['without']):.2f} / {med(wall['with']):.2f} s | "
              f"{med(rss['without']):.0f} / {med(rss['with']):.0f} MiB | "
              f"{' / '.join(f'{med(stage[n]):.2f} s' if stage[n] else '–' for n in ('without', 'with'))} |", flush=True)
    print(f"\n{runs} runs of each, interleaved.")
finally:
    shutil.rmtree(work, ignore_errors=True)
