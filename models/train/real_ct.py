"""Run the shipped models, through `pulmo analyze`, on the real CT slices of ../shared/data/real/ and
save overlays as PNGs beside the model cards (models/cards/real-ct/).

The samples are single axial slices, and the models are 3D: each slice is repeated into a 100 mm
slab (40 copies 2.5 mm apart, new UIDs, same pixels) that pulmo reads as a series. What the models
say about such a slab is only an illustration of how they behave on real scanners' images: the
slab has no fissures and no apex or base, so the lobe labels cannot be right, and they were
trained on phantoms only. Usage: real_ct.py [--pulmo BIN] [--models DIR] [--out DIR]
"""
import argparse
import copy
import json
import pathlib
import subprocess
import tempfile

import nibabel
import numpy as np
import pydicom
from PIL import Image, ImageDraw
from pydicom.uid import generate_uid

ROOT = pathlib.Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "data" / "real"
SAMPLES = sorted((REAL / "covid-ny-sbu").glob("*.dcm")) + [REAL / "lidc-slice" / "lidc-slice.dcm"]
SLICES = 40
THICKNESS = 2.5
# Lobe colours as in the SEG (STANDARDS.md's recommended display colours, approximately).
LOBE_RGB = {1: (255, 150, 120), 2: (120, 220, 120), 3: (120, 160, 255), 4: (240, 220, 90), 5: (200, 120, 230)}
OPACITY_RGB = {1: (255, 200, 0), 2: (255, 40, 40)}


def slab(src, out_dir):
    ds = pydicom.dcmread(src)
    series = generate_uid(prefix="2.25.")
    study = generate_uid(prefix="2.25.")
    for k in range(SLICES):
        d = copy.deepcopy(ds)
        d.StudyInstanceUID = study
        d.SeriesInstanceUID = series
        d.SOPInstanceUID = generate_uid(prefix="2.25.")
        d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
        d.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        x, y = (float(v) for v in ds.ImagePositionPatient[:2])
        d.ImagePositionPatient = [x, y, -THICKNESS * k]
        d.SliceThickness = THICKNESS
        d.InstanceNumber = k + 1
        d.SeriesNumber = 1
        d.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        d.save_as(out_dir / f"{k:03d}.dcm", enforce_file_format=True)
    return ds


def window(hu, lo=-1350.0, hi=150.0):
    return (np.clip((hu - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def overlay(ds, lobes, opac, title, path):
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    g = window(hu)
    rgb = np.stack([g, g, g], axis=-1).astype(np.float32)
    for labels, colours, alpha in ((lobes, LOBE_RGB, 0.25), (opac, OPACITY_RGB, 0.55)):
        for k, c in colours.items():
            m = labels == k
            rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(c, dtype=np.float32)
    left = Image.fromarray(np.stack([g, g, g], axis=-1))
    right = Image.fromarray(rgb.astype(np.uint8))
    img = Image.new("RGB", (left.width * 2, left.height + 22), (0, 0, 0))
    img.paste(left, (0, 22))
    img.paste(right, (left.width, 22))
    ImageDraw.Draw(img).text((6, 5), title, fill=(255, 255, 255))
    img.save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pulmo", default=str(ROOT / "target" / "release" / "pulmo"))
    ap.add_argument("--models", default=str(ROOT / "models"))
    ap.add_argument("--out", default=str(ROOT / "models" / "cards" / "real-ct"))
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        cfg = tmp / "pulmo.toml"
        cfg.write_text(f'[inference]\nmodels_dir = "{pathlib.Path(a.models).resolve()}"\n'
                       'execution_providers = ["cpu"]\n')
        for src in SAMPLES:
            name = src.stem
            d = tmp / name / "dicom"
            d.mkdir(parents=True)
            ds = slab(src, d)
            r = subprocess.run([a.pulmo, "--config", str(cfg), "analyze", str(d), "--out", str(tmp / name / "out"),
                                "--masks"], capture_output=True, text=True)
            if r.returncode not in (0, 3):
                rows.append({"sample": name, "error": r.stderr.strip().splitlines()[-1:]})
                continue
            f = json.loads((tmp / name / "out" / "findings.json").read_text())
            mid = SLICES // 2
            # NIfTI (column, row, slice) to (row, column); the slab's slices all hold the same pixels.
            lobes = np.asarray(nibabel.load(str(tmp / name / "out" / "lobes.nii.gz")).dataobj)[:, :, mid].T
            opac = np.asarray(nibabel.load(str(tmp / name / "out" / "opacities.nii.gz")).dataobj)[:, :, mid].T
            lung = int((lobes > 0).sum())
            share = 100.0 * int((opac > 0).sum()) / lung if lung else 0.0
            title = (f"{name}: lung {lung} px, opacified {share:.1f} % of it, "
                     f"COVID-19 probability {f['covid_probability']:.2f} (slab of one slice; synthetic-trained models)")
            overlay(ds, lobes, opac, title, out / f"{name}.png")
            rows.append({"sample": name, "lung_pixels": lung, "opacified_percent": round(share, 1),
                         "covid_probability": round(f["covid_probability"], 3),
                         "lobes_found": sorted(int(v) for v in np.unique(lobes) if v)})
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
