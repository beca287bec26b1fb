"""Write the three model cards (models/<name>.md) from the manifests, the evaluation JSON that
`evaluate --json` wrote, and the real-CT results of real_ct.py.

    cards.py --eval models/cards/evaluation.json
"""
import argparse
import json
import pathlib
import sys
import tomllib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from evaluate import breakdown, table  # noqa: E402
from spec import (CLASSIFIER_SEEDS, CLS_DIMS, LOBES_BORDER, LOBES_FISSURE_SURFACE, LOBES_MULTIPLE, LOBES_PATCH, LOBES_SPACING,  # noqa: E402
                  OPACITIES_EDGE, OPACITIES_MIN_RADIUS_VOXELS, OPACITIES_VESSELS, OPACITIES_PATCH, SEG_SPACING, TRAIN_SEEDS, WINDOW)

ROOT = pathlib.Path(__file__).resolve().parents[2]

WHAT = {
    "lobes": f"""A 3D U-Net (4 levels, 8-16-32-64 channels, instance normalisation) that labels every voxel as
background or one of the five lung lobes (RUL, RML, RLL, LUL, LLL); the lung mask is their union.
It sees the whole chest at once: the CT resampled to {LOBES_SPACING[0]} × {LOBES_SPACING[1]} × {LOBES_SPACING[2]} mm,
HU window {WINDOW[0]:.0f} to {WINDOW[1]:.0f} scaled to 0–1, padded with air to a multiple of
{LOBES_MULTIPLE} voxels (volumes up to {LOBES_PATCH[0]} × {LOBES_PATCH[1]} × {LOBES_PATCH[2]} voxels, z, y, x, run in
one piece; larger ones are tiled). Patches of 180 mm at 1.6 mm could not tell left from right or upper from
lower lobes in CPU-hours of training; the whole chest settles that in minutes. It was trained on the
fraction of each coarse voxel that each lobe fills, so pulmo interpolates its probabilities trilinearly to
every CT voxel and takes the argmax there (`upsample = "linear"` in the manifest): boundaries fall between
coarse voxels. Where the model is unsure (background probability {LOBES_BORDER['unsure'][0]}–{LOBES_BORDER['unsure'][1]}),
the CT places the border (`[output.lung_border]` in the manifest): aerated voxels ({LOBES_BORDER['air_below_hu']:.0f} to
{LOBES_BORDER['lung_below_hu']:.0f} HU) join the most probable lobe, and voxels denser than {LOBES_BORDER['wall_above_hu']:.0f} HU (chest wall,
diaphragm; ground glass is lighter) leave the lung unless dense lung the model is sure of lies within
{LOBES_BORDER['dense_reach_voxels']} in-plane voxels, which keeps consolidation that reaches the pleura, where CT shows no border.
pulmo takes the lung itself from the CT (src/segment/lung.rs) and lays these labels on it: every lung
voxel in one lobe of its side. After the opacity rules each fissure is taken as one smooth surface
(`[output.fissure_surface]`): the model's border between the two lobes as a height field, smoothed by a
local plane fit with Gaussian weights of {LOBES_FISSURE_SURFACE['smooth_mm']:.0f} mm, and shifted by the plane (up to
{LOBES_FISSURE_SURFACE['search_mm']:.0f} mm) that lies on the strongest ridge of the
CT (its density against the CT one slice above and below): a ridge too faint to see in any column of a
5 mm slice shows when thousands of columns are averaged. Each column of an oblique fissure then moves up to
{LOBES_FISSURE_SURFACE['refine_mm']:.0f} mm more (no further than the plane's reach) to the strongest ridge of the columns around it, pooled
with Gaussian weights of {LOBES_FISSURE_SURFACE['refine_smooth_mm']:.0f} mm, which follows a bend of the network's border that no plane fits; the
horizontal fissure's ridge leaves out voxels denser than {LOBES_FISSURE_SURFACE['hu_range'][1]:.0f} HU, since vessels run in its plane at the
hilum's level and read as ridges too.
The lobe voxels within {LOBES_FISSURE_SURFACE['band_mm']:.0f} mm of it take its side. Version 1.1.0 is the 1.0.0 network with the
border rule, 1.5.0 adds the fissure as a surface, 1.6.0 its refinement; 1.7.0 drops the rules that changed nothing
on real chest CT (the consolidated lobe of 1.2.0-1.3.0, the thin-slice fissure watershed of 1.4.0).""",
    "opacities": f"""A 3D U-Net (4 levels, 8-16-32-48 channels, instance normalisation) that labels every voxel as
background, ground-glass opacity or consolidation. Input, two channels in patches of
{OPACITIES_PATCH[0]} × {OPACITIES_PATCH[1]} × {OPACITIES_PATCH[2]} voxels on a {SEG_SPACING[0]} × {SEG_SPACING[1]} ×
{SEG_SPACING[2]} mm grid: the CT in the HU window {WINDOW[0]:.0f} to {WINDOW[1]:.0f} scaled to 0–1, and the lung
mask that the lobes model gave (1 inside any lobe; `channels = ["ct", "lung"]` in the manifest). The mask
is there because a consolidated lobe has the density of the chest wall beside it: on the CT alone, within a
patch, the model cannot tell them apart (1.0.0, CT only, labelled a fifth of a consolidated lobe). In
a first phase (4000 patch steps, one-cycle learning rate) the mask is the truth, grown or shrunk by a voxel
at random; in a second phase (1500 steps) it is, 60 % of the time, the mask that the shipped lobes model
gives on the training study, which runs a few millimetres into the diaphragm: the first phase had labelled
that dense strip consolidation (2–3 % of a normal lower lobe). Output: softmax over 3 classes; pulmo keeps
opacities inside the lobes mask only, and, after the classifier has seen that map, drops each opacity component
in which no ball of {OPACITIES_MIN_RADIUS_VOXELS} in-plane CT voxels fits (`min_inscribed_radius_voxels` in the
manifest): the network's false positives are thin and vessel-like (models/train/README.md). Then the CT carries
the opacities out to their edge (`[output.opacity_edge]`): lung at least as dense as
{OPACITIES_EDGE['dense_above_hu']:.0f} HU within {OPACITIES_EDGE['reach_mm']} mm in the slice of a found opacity joins it
(4-connected steps of a CT pixel, as many as fit: two on a 0.7 mm CT, none on a 2.8 mm one). The network's
opacities stop short of the lesions' edges by about one of its 1.6 mm voxels, which was most of the
underestimate of severe and critical COVID-19 lobes. Last, pulmo drops the small findings that are a vessel
(`[output.vessel_opacities]`): no ball of {OPACITIES_VESSELS['max_radius_mm']} mm radius fits in them and at least
{OPACITIES_VESSELS['min_vessel_share'] * 100:.0f} % of their voxels belong to dense lung (above
{OPACITIES_VESSELS['dense_above_hu']:.0f} HU) that lies mostly outside them, a vessel going on beyond the finding.
Nearly all of the network's remaining false positives in clean lobes were such pieces of vessels; the rule also
drops a small nodule touching a vessel. It keeps ground glass of its own that a vessel runs through: a finding at
least half of which is lung at or below {OPACITIES_VESSELS['dense_above_hu']:.0f} HU whose interquartile range is at most
{OPACITIES_VESSELS['max_ground_glass_iqr_hu']:.0f} HU (a vessel's halo falls off from the vessel to the lung, a wide range; a ground-glass
lesion is evenly dense). Version 1.2.0 is the 1.1.0 network with the filter; 1.3.0 adds the edge rule, 1.4.0 the
vessel rule, 1.6.0 the ground-glass exception to the vessel rule; 1.7.0 drops the solid-lesion rule of 1.5.0,
which changed nothing on real chest CT (not one voxel on lidc-idri-0001's nodules).""",
    "classifier": f"""A small 3D CNN (four strided convolutions, 12-24-32-48 channels, global mean and max pooling, plus
four global statistics of the opacity map) that gives the probability of the COVID-19 pattern against other
pneumonia patterns (lobar consolidation, nodules) and normal lungs. Input: two channels over the whole volume
resized to {CLS_DIMS[0]} × {CLS_DIMS[1]} × {CLS_DIMS[2]} (z, y, x): the CT in the window above, and the
opacity map of the opacities model (0 none, 0.5 ground-glass, 1 consolidation) — segmentation, then
classification, as in Jin et al. 2020. It learns from the maps it will be given: it trains on its own
{len(CLASSIFIER_SEEDS)} phantoms (seeds {CLASSIFIER_SEEDS.start}–{CLASSIFIER_SEEDS.stop - 1}), which the
segmentation models never saw, and three times in four a study's opacity channel is the map that the shipped
lobes and opacities models give on it (computed with ONNX Runtime, with pulmo's patches and blending),
otherwise the truth. On their own training studies the models' maps are nearly perfect; a candidate
classifier (1.1.0, not shipped) that learnt from those never met a false positive and called normal
phantoms COVID-19. Output: softmax over
(other, covid).""",
}

TRAINING = """Only synthetic data: {count} chest CT phantoms generated by `pulmo phantom` with seeds
{first}–{last} (models/train/data.py draws, per seed, the pattern — COVID-19 at
moderate, severe, critical or mild severity about half the time, otherwise lobar pneumonia, nodules or
normal —, the size — full 512 × 512 × ~300 at ~0.7 × 0.7 × 1 mm, or small 128 × 128 × ~64 at ~2.8 ×
2.8 × 5 mm — and the image noise, 8–35 HU). No patient data was used. Every random draw is seeded;
`models/train/train-all` retrains all three models from scratch. On a 2-core AVX-512 machine
(2026-12-04) each of its steps gave the shipped ONNX file byte for byte (models/train/README.md,
"Reproduced bit for bit"). Elsewhere a retrained model need not be bit-identical to the shipped
one (floating-point order in the CPU kernels depends on the CPU) and must be checked with
`models/train/evaluate` before it replaces it: one retraining on another machine (2026-12-03) gave
an opacities model that missed the opacity Dice, PLO 95th percentile and CTSS goals on the
held-out phantoms below, and choosing among three second phases of its opacities model, centring
their patches on the first phase's errors, averaging three of them, training on twice the studies
or for twice the steps, or drawing half the second phase's patches from small studies (2026-12-04)
did not meet them either (models/train/README.md, "Reproducing", "Choosing among candidates", "Hard
examples", "Twice the training studies", "Twice the steps", "Small studies' share")."""


def training(name):
    seeds = CLASSIFIER_SEEDS if name == "classifier" else TRAIN_SEEDS
    return TRAINING.format(count=len(seeds), first=seeds.start, last=seeds.stop - 1)


LIMITS = {
    "lobes": """- Trained on phantoms: the fissures are smooth height fields drawn as thin lines, the anatomy has no
  variants (accessory fissures, incomplete fissures, lobectomy), no disease that distorts lobes, no metal,
  no motion. On real CT it has never been validated; expect it to fail where real fissures are faint.
- The grid is 3.2 × 3.2 × 5 mm: fissures are placed by interpolated probabilities, and the fissures
  between the middle lobe and its neighbours are where the model errs most. The surface rule places
  them by a faint ridge averaged over the whole fissure; it follows the densest surface near the
  model's border: a fissure that is incomplete, or fainter than a vessel wall beside it, on real CT, may
  draw it astray; it moves a fissure by up to 6 mm to the
  strongest ridge it finds, even where the CT shows no fissure at all, and on a few small phantoms it
  moved the horizontal fissure the wrong way. It assumes each fissure is one surface over the axial plane (z a function of x and y). The lung's outer border is
  placed by the CT where the model is unsure; a subpleural opacity that is not near dense lung the model is
  sure of (thin ground glass is kept, being lighter than {wall} HU; a thin dense rind is not) can be cut
  from the lung there, and a lung on real CT that is denser than the rule allows (dependent atelectasis)
  would be trimmed likewise.""".format(wall=f"{LOBES_BORDER['wall_above_hu']:.0f}"),
    "opacities": """- Trained on phantom lesions: ellipsoids with fractal borders, ground-glass and consolidated cores, and
  phantom vessels. Real ground-glass, crazy paving, fibrosis, atelectasis, emphysema and beam hardening
  were never seen. Small nodules under about 5 mm are at the limit of the 1.6 mm grid.""",
    "classifier": """- "COVID-19 pattern" here means the phantom's pattern: bilateral, peripheral, mostly ground-glass
  opacities. A phantom labelled COVID-19 with severity none or mild has no opacity and counts as negative.
  Real COVID-19 pneumonia, other viral pneumonias, organising pneumonia and oedema can look alike; this
  model has never seen them and its probability is not a diagnosis.""",
}


def real_ct_section(name):
    res = ROOT / "models" / "cards" / "real-ct" / "results.json"
    if not res.exists():
        return "Not run yet (models/train/real_ct.py)."
    rows = json.loads(res.read_text())
    lines = ["`models/train/real_ct.py` runs `pulmo analyze` with these models on the real slices of "
             "../shared/data/real/ (TCIA COVID-19-NY-SBU, CC BY 4.0; LIDC-IDRI, CC BY 3.0). Each sample is one "
             "axial slice, so it is repeated into a 100 mm slab; the overlays (left: the slice in a lung window, "
             "right: lobes tinted, ground-glass yellow, consolidation red) are in cards/real-ct/.", "",
             "| sample | lung pixels | opacified | COVID-19 probability | lobes found |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['sample']} | error: {' '.join(r['error'])} | | | |")
        else:
            lines.append(f"| [{r['sample']}](cards/real-ct/{r['sample']}.png) | {r['lung_pixels']} | "
                         f"{r['opacified_percent']} % | {r['covid_probability']} | {r['lobes_found']} |")
    return "\n".join(lines)


def real_chest_section():
    """The real-CT evaluation of record (bench/real_ct.py), from its results.json as committed in
    models/cards/real-chest/: shown before any phantom figure."""
    res = ROOT / "models" / "cards" / "real-chest" / "results.json"
    if not res.exists():
        return "Not run yet (bench/real_ct.py)."
    rows = json.loads(res.read_text())
    lines = [
        "`bench/real_ct.py` runs `pulmo analyze` on every whole-chest CT of ../shared/data/real/ "
        "(COVID-CT-MD, CC BY 4.0; Chest Imaging Platform COPDGene case; TCIA CMB-CRC, CC BY 4.0; "
        "LIDC-IDRI, CC BY 3.0). The lung is taken from the CT's HU (src/segment/lung.rs) and this "
        "model's lobes are laid on it; opacities and the probability are the models'. Lung Dice is "
        "against the Chest Imaging Platform's expert-checked lung mask; \"aerated without lobe\" and "
        "\"lobe outside lung\" are against an independent HU lung (scipy, below -500 HU inside the "
        "body); lobes agree: per-lobe infection labels of the radiologists against lobe PLO >= 1 %; "
        "slices: TP FP FN TN of slices with >= 50 mm^2 of opacity against the per-slice labels. "
        "Overlays: docs/images/real-ct/.",
        "",
        "| case | lung ml | lung Dice | aerated without lobe % | lobe outside lung % | lobe shares % "
        "(RUL RML RLL LUL LLL) | PLO % | P(COVID-19) | lobes agree /5 | slices TP FP FN TN | QC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['case']} | refused: {r['refused']} | | | | | | | | | |")
            continue
        qc = "passed" if r["qc_passed"] else "failed: " + ", ".join(r["qc_failed"])
        lines.append(
            f"| {r['case']} | {r['lung_ml']} | {r.get('lung_dice', '')} | {r['aerated_without_lobe_pct']} | "
            f"{r['lobe_outside_lung_pct']} | {' '.join(str(v) for v in r['lobe_share_pct'].values())} | "
            f"{r['plo_pct']} | {r['covid_probability']} | {r.get('lobes_agree', '')} | "
            f"{' '.join(str(v) for v in r.get('slices_tp_fp_fn_tn', []))} | {qc} |")
    lines += ["", "On real CT the COVID-19 probability is no better than chance (normal lungs and a COPD "
              "lung score as high as the pneumonias), and the lobe borders are the phantom-trained "
              "model's, with no real lobe reference to measure them against."]
    return "\n".join(lines)


def card(name, manifest, summary, rows, observations):
    m = tomllib.loads(manifest.read_text())
    return f"""# Model card: {m['name']} {m['version']}

**Not for clinical use.** This model was trained on synthetic data generated by `pulmo phantom`, for
integration and testing of pulmo. It has no clinical validation; hospitals replace it with a validated
model through the manifest ({name}.toml). Every SR pulmo writes names the model and its version.

| | |
|---|---|
| file | `{m['file']}` (ONNX, opset 17) |
| sha256 | `{m['sha256']}` |
| role | {m['role']} ({m['task']}) |
| licence | {m['licence']} |
| training code | models/train/ (`models/train/train-all`) |

## Real chest CT first

{real_chest_section()}

## What it is

{WHAT[name]}

## Training data

{training(name)}

## Evaluation

`models/train/evaluate` runs pulmo itself (`pulmo analyze --masks`, the Rust path with ONNX Runtime on
CPU) on held-out phantoms whose seeds training never saw, every pattern and severity at both sizes, and
compares with the phantom's truth on the CT grid. The table covers the whole model set, since each
number depends on more than one model (PLO needs lobes and opacities; AUC needs the opacities model's map).

{table(summary, len(rows))}

Where the misses are, per case (CTSS split by the truth's score: a lobe with no opacity scores 0
only if not one voxel of it is found opacified):

{breakdown(rows)}

{observations}

## Real CT

{real_ct_section(name)}

## Limits

{LIMITS[name]}
- The metrics above are agreement with a phantom's own truth, not clinical accuracy.

## Licence

Apache-2.0 (weights and code). Not for clinical use.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--notes", help="a Markdown file with observations to put under the table")
    a = ap.parse_args()
    data = json.loads(pathlib.Path(a.eval).read_text())
    notes = pathlib.Path(a.notes).read_text() if a.notes else ""
    for name in ("lobes", "opacities", "classifier"):
        manifest = ROOT / "models" / f"{name}.toml"
        (ROOT / "models" / f"{name}.md").write_text(card(name, manifest, data["summary"], data["studies"], notes))
        print(ROOT / "models" / f"{name}.md")


if __name__ == "__main__":
    main()
