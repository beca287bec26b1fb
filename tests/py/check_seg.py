"""Read a pulmo SEG with an independent reader and compare it with the phantom's truth.

    check_seg.py highdicom SEG TRUTH_NII DICOM_DIR lobes|opacities
    check_seg.py dcmqi     SEG TRUTH_NII OUT_DIR   lobes|opacities

highdicom 0.28.2: segment metadata as pulmo wrote it, and the masks by source instance, voxel for
voxel. dcmqi 1.5.7 (segimage2itkimage, what 3D Slicer uses): the label map it writes equals the
truth in world space. Prints "ok ..." or exits non-zero with the differences."""
import pathlib
import subprocess
import sys

import nibabel as nib
import numpy as np

tool, seg_path, truth_path, other, kind = sys.argv[1:6]
truth_img = nib.load(truth_path)
truth = np.asarray(truth_img.dataobj).astype(np.uint8)  # (x, y, z)
truth_zyx = np.transpose(truth, (2, 1, 0))

EXPECTED = {
    "lobes": [("Right upper lobe", "45653009", "24028007"), ("Right middle lobe", "72481006", None),
              ("Right lower lobe", "90572001", "24028007"), ("Left upper lobe", "45653009", "7771000"),
              ("Left lower lobe", "90572001", "7771000")],
    "opacities": [("Ground-glass opacity", "112120", None), ("Consolidation", "95436008", None)],
}[kind]


def fail(msg):
    print(msg)
    sys.exit(1)


if tool == "highdicom":
    import highdicom as hd
    import pydicom

    seg = hd.seg.segread(seg_path)
    if seg.segmentation_type != hd.seg.SegmentationTypeValues.BINARY:
        fail(f"type {seg.segmentation_type}")
    if seg.number_of_segments != len(EXPECTED):
        fail(f"{seg.number_of_segments} segments")
    for n, (label, prop, modifier) in enumerate(EXPECTED, start=1):
        d = seg.get_segment_description(n)
        if d.segment_label != label:
            fail(f"segment {n} label {d.segment_label!r}, expected {label!r}")
        if d.segmented_property_type.value != prop:
            fail(f"segment {n} type {d.segmented_property_type}")
        mods = [m.CodeValue for m in getattr(d.SegmentedPropertyTypeCodeSequence[0],
                                              "SegmentedPropertyTypeModifierCodeSequence", [])]
        if (modifier is None and mods) or (modifier is not None and mods != [modifier]):
            fail(f"segment {n} modifier {mods}")
        if d.algorithm_type != hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC:
            fail(f"segment {n} algorithm type {d.algorithm_type}")
        if not d.algorithm_identification or not d.algorithm_identification[0].AlgorithmName:
            fail(f"segment {n} has no algorithm identification")
    series_uid = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    src = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(pathlib.Path(other).rglob("*.dcm"))]
    src = [d for d in src if d.SeriesInstanceUID == series_uid]
    src.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    uids = [d.SOPInstanceUID for d in src]
    arr = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        combine_segments=True,
        assert_missing_frames_are_empty=True,
    )
    if arr.shape != truth_zyx.shape:
        fail(f"shape {arr.shape}, truth {truth_zyx.shape}")
    wrong = int((arr != truth_zyx).sum())
    if wrong:
        fail(f"{wrong} voxels differ from the truth")
    print(f"ok highdicom {kind}: {arr.shape}, {int((arr > 0).sum())} labelled voxels")
elif tool == "dcmqi":
    out = pathlib.Path(other)
    out.mkdir(parents=True, exist_ok=True)
    exe = pathlib.Path(sys.executable).parent / "segimage2itkimage"
    r = subprocess.run([exe, "--inputDICOM", seg_path, "--outputDirectory", out, "-t", "nifti",
                        "--mergeSegments"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"segimage2itkimage failed: {r.stdout}\n{r.stderr}")
    files = sorted(out.glob("*.nii*"))
    if not files:
        fail(f"segimage2itkimage wrote no image: {r.stdout}")
    img = nib.as_closest_canonical(nib.load(files[0]))
    ref = nib.as_closest_canonical(truth_img)
    data = np.asarray(img.dataobj).astype(np.int64)
    expected = np.asarray(ref.dataobj).astype(np.int64)
    if data.ndim == 4:
        data = data[..., 0]
    # dcmqi knows only the SEG's frames, so its grid spans the slices that have any: place it
    # inside the truth grid through the affines, compare there, and require nothing outside.
    if not np.allclose(img.affine[:3, :3], ref.affine[:3, :3], atol=1e-4):
        fail(f"dcmqi axes/spacing\n{img.affine}\ntruth\n{ref.affine}")
    offset = np.linalg.inv(ref.affine) @ img.affine[:, 3]
    if not np.allclose(offset[:3], np.round(offset[:3]), atol=1e-3):
        fail(f"dcmqi grid is not on the truth grid: offset {offset[:3]}")
    o = np.round(offset[:3]).astype(int)
    if np.any(o < 0) or np.any(o + data.shape > np.array(expected.shape)):
        fail(f"dcmqi grid {data.shape} at {o} leaves the truth grid {expected.shape}")
    region = tuple(slice(o[a], o[a] + data.shape[a]) for a in range(3))
    wrong = int((data != expected[region]).sum())
    outside = int(expected.astype(bool).sum() - expected[region].astype(bool).sum())
    if wrong or outside:
        fail(f"{wrong} voxels differ from the truth, {outside} labelled voxels outside dcmqi's grid "
             f"(values {np.unique(data)} vs {np.unique(expected)})")
    print(f"ok dcmqi {kind}: {data.shape}, {int((data > 0).sum())} labelled voxels")
else:
    fail(f"unknown tool {tool}")
