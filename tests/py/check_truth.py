"""Independent check of a phantom's truth: recompute every number of truth.json from the NIfTI
label volumes with nibabel + numpy (DESIGN.md definitions), and check that the NIfTI affine places
the voxels where the DICOM files (read with pydicom) say the slices are."""
import json
import pathlib
import sys

import nibabel as nib
import numpy as np
import pydicom

root = pathlib.Path(sys.argv[1])
truth = json.loads((root / "truth/truth.json").read_text())
lobes_img = nib.load(root / "truth/lobes.nii.gz")
opac_img = nib.load(root / "truth/opacities.nii.gz")
lobes = np.asarray(lobes_img.dataobj)
opac = np.asarray(opac_img.dataobj)
g = truth["geometry"]
assert lobes.shape == (g["columns"], g["rows"], g["slices"]), lobes.shape
assert opac.shape == lobes.shape
assert set(np.unique(lobes)) <= {0, 1, 2, 3, 4, 5}, np.unique(lobes)
assert set(np.unique(opac)) <= {0, 1, 2}, np.unique(opac)
assert not np.any(opac[lobes == 0]), "opacities outside the lungs"

# Geometry: NIfTI (RAS) voxel (0,0,k) must be the DICOM slice's ImagePositionPatient (LPS).
files = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((root / "dicom").rglob("*.dcm"))]
thin = [d for d in files if d.SeriesInstanceUID == truth["series_instance_uid"]]
assert len(thin) == g["slices"], (len(thin), g["slices"])
by_z = sorted(thin, key=lambda d: float(d.ImagePositionPatient[2]))
for k in (0, g["slices"] // 2, g["slices"] - 1):
    ras = lobes_img.affine @ np.array([0, 0, k, 1.0])
    lps = np.array([-ras[0], -ras[1], ras[2]])
    ipp = np.array([float(v) for v in by_z[k].ImagePositionPatient])
    assert np.allclose(lps, ipp, atol=1e-3), (k, lps, ipp)
    ps = [float(v) for v in by_z[k].PixelSpacing]
    assert np.allclose(nib.affines.voxel_sizes(lobes_img.affine)[:2], [ps[1], ps[0]], atol=1e-5)

vox_ml = float(np.prod(nib.affines.voxel_sizes(lobes_img.affine))) / 1000.0

def ctss(plo):
    if plo <= 0: return 0
    if plo < 5: return 1
    if plo <= 25: return 2
    if plo <= 50: return 3
    if plo <= 75: return 4
    return 5

lung = opacified = total = 0
for key, label in [("RUL", 1), ("RML", 2), ("RLL", 3), ("LUL", 4), ("LLL", 5)]:
    inside = lobes == label
    n = int(inside.sum())
    ggo = int((inside & (opac == 1)).sum())
    cons = int((inside & (opac == 2)).sum())
    plo = 100.0 * (ggo + cons) / n if n else 0.0
    t = truth["lobes"][key]
    assert abs(t["volume_ml"] - n * vox_ml) < 1e-3, (key, t["volume_ml"], n * vox_ml)
    assert abs(t["plo_percent"] - plo) < 1e-6, (key, t["plo_percent"], plo)
    assert abs(t["ggo_percent"] - (100.0 * ggo / n if n else 0)) < 1e-6, key
    assert abs(t["consolidation_percent"] - (100.0 * cons / n if n else 0)) < 1e-6, key
    assert t["ctss"] == ctss(plo), (key, t["ctss"], ctss(plo))
    lung += n
    opacified += ggo + cons
    total += ctss(plo)
w = truth["whole_lung"]
assert abs(w["volume_ml"] - lung * vox_ml) < 1e-3
assert abs(w["plo_percent"] - 100.0 * opacified / lung) < 1e-6
assert w["ctss_total"] == total
print(f"ok {lung} lung voxels, PLO {w['plo_percent']:.3f} %, CTSS {total}")
