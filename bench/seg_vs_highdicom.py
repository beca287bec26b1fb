"""Benchmark: build and write the lobes and opacities SEGs of a full-size phantom from its truth
masks, pulmo against highdicom 0.28.2, in one run; medians of RUNS runs (default 3). Run from the
repository root after `make build` and `cargo build --release --example seg_bench`:

    build/venv/bin/python bench/seg_vs_highdicom.py

Timed: building and writing both SEGs (reading the source and the masks is not timed, on either
side). Peak memory: maximum RSS of the whole process (GNU time), which includes reading."""
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

root = pathlib.Path(__file__).resolve().parent.parent
runs = int(os.environ.get("RUNS", "3"))
work = pathlib.Path(tempfile.mkdtemp())

PEER = r'''
import pathlib, sys, time
import highdicom as hd, nibabel as nib, numpy as np, pydicom
from pydicom.sr.codedict import codes
study, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
src = [pydicom.dcmread(p) for p in sorted((study / "dicom").rglob("*.dcm"))]
src.sort(key=lambda d: float(d.ImagePositionPatient[2]))
lobes = np.transpose(np.asarray(nib.load(study / "truth/lobes.nii.gz").dataobj), (2, 1, 0)).astype(np.uint8)
opac = np.transpose(np.asarray(nib.load(study / "truth/opacities.nii.gz").dataobj), (2, 1, 0)).astype(np.uint8)
algo = hd.AlgorithmIdentificationSequence(name="truth", version="1", family=codes.cid7162.ArtificialIntelligence)
C = hd.sr.CodedConcept
anat, abn = C("91723000", "SCT", "Anatomical Structure"), C("49755003", "SCT", "Morphologically Abnormal Structure")
def desc(n, label, cat, prop):
    return hd.seg.SegmentDescription(segment_number=n, segment_label=label, segmented_property_category=cat,
        segmented_property_type=prop, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo)
lobe_descs = [desc(1, "Right upper lobe", anat, C("45653009", "SCT", "Upper lobe of lung")),
              desc(2, "Right middle lobe", anat, C("72481006", "SCT", "Middle lobe of right lung")),
              desc(3, "Right lower lobe", anat, C("90572001", "SCT", "Lower lobe of lung")),
              desc(4, "Left upper lobe", anat, C("45653009", "SCT", "Upper lobe of lung")),
              desc(5, "Left lower lobe", anat, C("90572001", "SCT", "Lower lobe of lung"))]
opac_descs = [desc(1, "Ground-glass opacity", abn, C("112120", "DCM", "Ground glass opacity")),
              desc(2, "Consolidation", abn, C("95436008", "SCT", "Lung consolidation"))]
out.mkdir(parents=True, exist_ok=True)
t = time.perf_counter()
for name, mask, descs, number in [("lobes", lobes, lobe_descs, 9001), ("opacities", opac, opac_descs, 9002)]:
    seg = hd.seg.Segmentation(source_images=src, pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descs,
        series_instance_uid=hd.UID(), series_number=number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="pulmo", manufacturer_model_name="pulmo", software_versions="0.1.0",
        device_serial_number="1", omit_empty_frames=True)
    seg.save_as(out / f"seg-{name}.dcm")
print(f"{time.perf_counter() - t:.3f}")
'''


def timed(cmd):
    t = work / "time"
    out = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t, *map(str, cmd)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.split()[-1]), int(t.read_text().split()[-1]) / 1024


try:
    subprocess.run([root / "target/release/pulmo", "phantom", "--out", work / "study", "--seed", "1",
                    "--size", "full", "--severity", "severe"], check=True, capture_output=True)
    (work / "peer.py").write_text(PEER)
    rows = {"pulmo": [], "pulmo_rss": [], "hd": [], "hd_rss": []}
    for i in range(runs):
        s, m = timed([root / "target/release/examples/seg_bench", work / "study", work / f"p{i}"])
        rows["pulmo"].append(s); rows["pulmo_rss"].append(m)
        s, m = timed([sys.executable, work / "peer.py", work / "study", work / f"h{i}"])
        rows["hd"].append(s); rows["hd_rss"].append(m)
    size = lambda d: sum(f.stat().st_size for f in d.glob("*.dcm")) / 2**20
    m = {k: statistics.median(v) for k, v in rows.items()}
    print("| build and write both SEGs | pulmo | highdicom 0.28.2 | highdicom / pulmo |")
    print("| --- | --- | --- | --- |")
    print(f"| time (median of {runs}) | {m['pulmo']:.3f} s | {m['hd']:.2f} s | {m['hd'] / m['pulmo']:.0f} |")
    print(f"| peak memory of the process | {m['pulmo_rss']:.0f} MiB | {m['hd_rss']:.0f} MiB | {m['hd_rss'] / m['pulmo_rss']:.1f} |")
    print(f"| size of both files | {size(work / 'p0'):.1f} MiB | {size(work / 'h0'):.1f} MiB | |")
finally:
    shutil.rmtree(work, ignore_errors=True)
