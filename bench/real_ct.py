"""The real-CT evaluation of record: `pulmo analyze` on every whole-chest case of ../shared/data/real/,
one table, and an overlay PNG per case (axial and coronal, lobes and opacities on the CT).

The lung references here are independent of pulmo's code (scipy, not pulmo's Rust):
- aerated lung: below -500 HU, inside the body (per slice, not reached from the image border through
  air), in 3D components of at least 10 ml. The trachea and main bronchi are part of it; an aerated
  component without lobe that leaves the top of the scan is counted as airway, not as missed lung.
- HU lung: the aerated lung with each slice's enclosed holes filled (vessels, nodules inside the lung).
  "Lobe voxels outside the lung" is the share of lobe voxels outside it. Dense disease at the pleura is
  outside it too, so on P001 and cap001 this figure also counts consolidation that is rightly lobe.
- cip-copdgene-64: Dice of pulmo's lung (every lobe) against the Chest Imaging Platform's lung mask.
- covid-ct-md: the radiologists' per-lobe labels against lobe PLO >= 1 %, and their per-slice labels
  against slices holding >= 50 mm^2 of opacity.

Usage: bench/real_ct.py [--pulmo BIN] [--out DIR] [--config FILE] [--cases a,b] [--json FILE]
Writes DIR/<case>/ (pulmo's output), DIR/overlays/<case>.png, DIR/table.md and DIR/results.json.
Exit status 0 when every case was run (whatever its figures); the CI test asserts the bounds.
"""
import argparse
import gzip
import json
import pathlib
import subprocess
import sys
import time

import nibabel
import numpy as np
import pydicom
from PIL import Image, ImageDraw
from scipy import ndimage

ROOT = pathlib.Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
CASES = {
    "normal001": REAL / "covid-ct-md" / "normal001",
    "P001": REAL / "covid-ct-md" / "P001",
    "cap001": REAL / "covid-ct-md" / "cap001",
    "cip-copdgene-64": REAL / "cip-copdgene-64" / "ct",
    "cmb-crc-01068": REAL / "cmb-crc-01068",
    "lidc-idri-0001": REAL / "lidc-idri-0001",
}
LOBES = ["RUL", "RML", "RLL", "LUL", "LLL"]
LOBE_RGB = {1: (255, 150, 120), 2: (120, 220, 120), 3: (120, 160, 255), 4: (240, 220, 90), 5: (200, 120, 230)}
OPACITY_RGB = {1: (255, 200, 0), 2: (255, 40, 40)}
MISSED_RGB = (0, 255, 255)
OUTSIDE_RGB = (255, 0, 255)


def read_ct(folder):
    """HU as [slice][row][column], slices in ascending position along the slice normal, as pulmo."""
    slices = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p)
        except Exception:
            continue
        if "PixelData" not in ds:
            continue
        iop = np.array(ds.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        pos = float(np.dot(normal, np.array(ds.ImagePositionPatient, float)))
        hu = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1)) + float(
            getattr(ds, "RescaleIntercept", 0)
        )
        slices.append((pos, hu, [float(v) for v in ds.PixelSpacing]))
    slices.sort(key=lambda s: s[0])
    hu = np.stack([s[1] for s in slices])
    dz = np.median(np.diff([s[0] for s in slices])) if len(slices) > 1 else 1.0
    # Index of each acquired slice on the regular grid (pulmo fills single missing slices).
    grid = np.rint((np.array([s[0] for s in slices]) - slices[0][0]) / dz).astype(int)
    return hu, (float(dz), slices[0][2][0], slices[0][2][1]), grid


def read_labels(path):
    img = nibabel.load(str(path))
    return np.asanyarray(img.dataobj).transpose(2, 1, 0).astype(np.uint8)


def read_nrrd(path):
    """A gzip or raw NRRD volume as [z][y][x] (written by hand: one header format, no extra package)."""
    data = path.read_bytes()
    head, _, body = data.partition(b"\n\n")
    fields = {}
    for line in head.decode().splitlines()[1:]:
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    sizes = [int(s) for s in fields["sizes"].split()]
    dtype = {"unsigned short": "<u2", "short": "<i2", "unsigned char": "u1", "uchar": "u1"}[fields["type"]]
    if fields.get("encoding") == "gzip":
        body = gzip.decompress(body)
    return np.frombuffer(body, dtype=dtype).reshape(sizes[::-1])


def body_interior(hu):
    """Per slice: voxels not reached from the image border through voxels below -500 HU."""
    air = hu < -500
    inside = np.zeros_like(air)
    for k in range(hu.shape[0]):
        lab, n = ndimage.label(air[k])
        edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        inside[k] = air[k] & ~np.isin(lab, edge[edge > 0])
    return inside


def references(hu, voxel_ml):
    aerated = body_interior(hu)
    lab, n = ndimage.label(aerated)
    sizes = ndimage.sum(aerated, lab, range(1, n + 1)) * voxel_ml
    keep = np.zeros(n + 1, bool)
    # Lung-sized: gas in the bowel or under the table is smaller than a twentieth of the lungs.
    keep[1:] = (sizes >= 10.0) & (sizes >= 0.05 * sizes.max(initial=0.0))
    # Air in the table or its pad is flat: far wider than it is high, front to back.
    for i, box in enumerate(ndimage.find_objects(lab)):
        if keep[i + 1] and (box[1].stop - box[1].start) * 4 < (box[2].stop - box[2].start):
            keep[i + 1] = False
    aerated = keep[lab]
    filled = np.zeros_like(aerated)
    for k in range(hu.shape[0]):
        filled[k] = ndimage.binary_fill_holes(aerated[k])
    return aerated, filled


def missed_lung(aerated, lobes, hu, voxel_ml):
    """Aerated voxels without lobe, less airway: a component that leaves the top of the scan
    (the trachea) or that is air rather than lung and airway-sized (mean below -900 HU, under
    150 ml: the trachea and main bronchi cut off by the lungs' masks)."""
    missed = aerated & (lobes == 0)
    lab, n = ndimage.label(missed)
    top = np.unique(lab[-1])
    airway = set(top[top > 0].tolist())
    if n:
        means = ndimage.mean(hu, lab, range(1, n + 1))
        sizes = ndimage.sum(missed, lab, range(1, n + 1)) * voxel_ml
        airway |= {i + 1 for i, (m, v) in enumerate(zip(means, sizes)) if m < -900 and v < 150.0}
    return missed & ~np.isin(lab, list(airway))


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * (a & b).sum() / s


def window(hu, lo=-1350.0, hi=150.0):
    return (np.clip((hu - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def paint(hu2d, lobes2d, opac2d, missed2d, outside2d):
    g = window(hu2d)
    rgb = np.stack([g, g, g], -1).astype(np.float32)
    for v, c in LOBE_RGB.items():
        m = lobes2d == v
        rgb[m] = 0.65 * rgb[m] + 0.35 * np.array(c)
    for v, c in OPACITY_RGB.items():
        m = opac2d == v
        rgb[m] = 0.35 * rgb[m] + 0.65 * np.array(c)
    rgb[missed2d] = 0.4 * rgb[missed2d] + 0.6 * np.array(MISSED_RGB)
    rgb[outside2d] = 0.4 * rgb[outside2d] + 0.6 * np.array(OUTSIDE_RGB)
    return rgb.astype(np.uint8)


def overlay(hu, lobes, opac, missed, outside, spacing, title, path):
    dz, dy, dx = spacing
    lung = lobes > 0
    zs = np.nonzero(lung.any(axis=(1, 2)))[0]
    if len(zs) == 0:
        zs = np.array([hu.shape[0] // 2])
    picks = [zs[0] + (zs[-1] - zs[0]) * f // 100 for f in (25, 50, 75)]
    tiles = []
    for k in picks:
        tiles.append((f"axial {k}", paint(hu[k], lobes[k], opac[k], missed[k], outside[k])))
    ys = np.nonzero(lung.any(axis=(0, 2)))[0]
    y = int(ys.mean()) if len(ys) else hu.shape[1] // 2
    cor = paint(*(a[:, y, :][::-1] for a in (hu, lobes, opac, missed, outside)))
    h = max(1, int(round(cor.shape[0] * dz / dy)))
    tiles.append((f"coronal row {y}", np.array(Image.fromarray(cor).resize((cor.shape[1], h), Image.NEAREST))))
    size = 384
    canvas = Image.new("RGB", (size * len(tiles), size + 36), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (name, t) in enumerate(tiles):
        im = Image.fromarray(t)
        im.thumbnail((size, size))
        canvas.paste(im, (i * size + (size - im.width) // 2, 36 + (size - im.height) // 2))
        draw.text((i * size + 4, 20), name, fill=(200, 200, 200))
    draw.text((4, 4), title + "  (cyan: aerated lung without lobe; magenta: lobe outside the HU lung; yellow GGO, red consolidation)", fill=(255, 255, 255))
    canvas.save(path)


def covid_labels(case):
    p = REAL / "covid-ct-md" / f"{case}-labels.json"
    return json.loads(p.read_text()) if p.exists() else None


def slice_agreement(labels, hu_positions, opac, area_mm2):
    """Per labelled slice: found (>= 50 mm^2 opacity) against the radiologists' mark."""
    tp = fp = fn = tn = 0
    for s in labels["slices"]:
        k = int(np.argmin(np.abs(hu_positions - s["slice_location"])))
        found = (opac[k] > 0).sum() * area_mm2 >= 50.0
        tp += found and s["infected"]
        fp += found and not s["infected"]
        fn += (not found) and s["infected"]
        tn += (not found) and not s["infected"]
    return tp, fp, fn, tn


def evaluate(case, folder, args):
    out = args.out / case
    cmd = [str(args.pulmo), "analyze", str(folder), "--out", str(out), "--masks"]
    if args.config:
        cmd += ["--config", str(args.config)]
    t = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - t
    row = {"case": case, "seconds": round(seconds, 1), "exit": run.returncode}
    findings = out / "findings.json"
    if not findings.exists():
        row["refused"] = (run.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return row
    f = json.loads(findings.read_text())
    hu, spacing, grid = read_ct(folder)
    lobes = read_labels(out / "lobes.nii.gz")
    opac = read_labels(out / "opacities.nii.gz")
    if lobes.shape[0] == grid[-1] + 1 and lobes.shape[0] > hu.shape[0]:
        # Judged on the acquired slices only: the reference never sees a slice pulmo filled in.
        row["filled_slices"] = int(lobes.shape[0] - hu.shape[0])
        lobes, opac = lobes[grid], opac[grid]
    if lobes.shape != hu.shape:
        row["refused"] = f"mask shape {lobes.shape} is not the CT's {hu.shape}"
        return row
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    aerated, hu_lung = references(hu, voxel_ml)
    missed = missed_lung(aerated, lobes, hu, voxel_ml)
    lung = lobes > 0
    row.update(
        lung_ml=round(float(f["whole_lung"]["volume_ml"])),
        aerated_without_lobe_pct=round(100.0 * missed.sum() / max(1, aerated.sum()), 2),
        lobe_outside_lung_pct=round(100.0 * (lung & ~hu_lung).sum() / max(1, lung.sum()), 2),
        lobe_share_pct={k: round(100.0 * f["lobes"][k]["volume_ml"] / max(1e-9, f["whole_lung"]["volume_ml"]), 1) for k in LOBES},
        plo_pct=round(f["whole_lung"]["plo_percent"], 1),
        ggo_pct=round(sum(f["lobes"][k]["ggo_percent"] * f["lobes"][k]["volume_ml"] for k in LOBES) / max(1e-9, f["whole_lung"]["volume_ml"]), 1),
        consolidation_pct=round(sum(f["lobes"][k]["consolidation_percent"] * f["lobes"][k]["volume_ml"] for k in LOBES) / max(1e-9, f["whole_lung"]["volume_ml"]), 1),
        covid_probability=round(f["covid_probability"], 2),
        qc_passed=f["qc_passed"],
        qc_failed=[q["name"] for q in f["qc"] if not q["passed"]],
    )
    if case == "cip-copdgene-64":
        ref = read_nrrd(REAL / "cip-copdgene-64" / "lung-reference.nrrd") > 0
        row["lung_dice"] = round(dice(lung, ref), 3) if ref.shape == lung.shape else f"shape {ref.shape}"
    labels = covid_labels(case)
    if labels:
        row["lobes_agree"] = sum(
            (f["lobes"][k]["plo_percent"] >= 1.0) == bool(labels["lobes_infected"][k]) for k in LOBES
        )
        positions = np.array(sorted(float(pydicom.dcmread(p, stop_before_pixels=True).SliceLocation) for p in folder.iterdir()))
        tp, fp, fn, tn = slice_agreement(labels, positions, opac, spacing[1] * spacing[2])
        row["slices_tp_fp_fn_tn"] = [tp, fp, fn, tn]
    (args.out / "overlays").mkdir(parents=True, exist_ok=True)
    overlay(hu, lobes, opac, missed, lung & ~hu_lung, spacing, f"{case}: PLO {row['plo_pct']} %, P(COVID-19) {row['covid_probability']}",
            args.out / "overlays" / f"{case}.png")
    return row


def plain(o):
    return o.item() if hasattr(o, "item") else str(o)


def table(rows):
    head = ("| case | lung ml | lung Dice | aerated without lobe % | lobe outside lung % | lobe shares % (RUL RML RLL LUL LLL) "
            "| PLO % | GGO % | cons. % | P(COVID) | lobes agree /5 | slices TP FP FN TN | QC | s |")
    lines = [head, "|" + " --- |" * 14]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['case']} | refused: {r['refused']} |" + " |" * 12 + f" {r['seconds']} |")
            continue
        qc = "passed" if r["qc_passed"] else "failed: " + ", ".join(r["qc_failed"])
        lines.append(
            f"| {r['case']} | {r['lung_ml']} | {r.get('lung_dice', '')} | {r['aerated_without_lobe_pct']} | "
            f"{r['lobe_outside_lung_pct']} | {' '.join(str(v) for v in r['lobe_share_pct'].values())} | {r['plo_pct']} | "
            f"{r['ggo_pct']} | {r['consolidation_pct']} | {r['covid_probability']} | {r.get('lobes_agree', '')} | "
            f"{' '.join(str(v) for v in r.get('slices_tp_fp_fn_tn', []))} | {qc} | {r['seconds']} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pulmo", type=pathlib.Path, default=ROOT / "target" / "release" / "pulmo")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "build" / "real-ct")
    ap.add_argument("--config", type=pathlib.Path)
    ap.add_argument("--cases", help="comma-separated subset of: " + ", ".join(CASES))
    args = ap.parse_args()
    names = args.cases.split(",") if args.cases else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        sys.exit(f"unknown case(s): {', '.join(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in names:
        rows.append(evaluate(n, CASES[n], args))
        print(json.dumps(rows[-1], default=plain), file=sys.stderr, flush=True)
    md = table(rows)
    (args.out / "table.md").write_text(md + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=plain) + "\n")
    print(md)


if __name__ == "__main__":
    main()
