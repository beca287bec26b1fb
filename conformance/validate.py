"""The validators pulmo's outputs must pass, run on every DICOM file of a folder:

- every object: dciodvfy (no "Error" line) and dcmjs (parses, naturalises);
- SEG: highdicom segread (masks read), dcmqi segimage2itkimage (converts);
- SR: DCMTK dsrdump -Ee -Ec (nothing on stderr), highdicom srread as a TID 1500 Measurement
  Report, dcmqi tid1500reader (converts);
- Secondary Capture (the overlay series): pydicom decodes RGB pixels, DCMTK dcm2pnm renders a PNG.

Prints one row per file and validator, then a summary line "N passed, N failed"."""
import os
import pathlib
import subprocess
import sys
import tempfile

import highdicom as hd
import pydicom

root = pathlib.Path(__file__).resolve().parent.parent
venv_bin = pathlib.Path(sys.executable).parent
node_modules = root / "build/node/node_modules"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
SR = {"1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR", "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR"}


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def dciodvfy(path):
    r = run(["dciodvfy", path])
    errors = [line for line in (r.stdout + r.stderr).splitlines() if "Error" in line]
    return not errors, errors[0] if errors else ""


def dcmjs(path):
    script = ("const d=require('dcmjs');const fs=require('fs');"
              "const b=fs.readFileSync(process.argv[1]);"
              "const m=d.data.DicomMessage.readFile(b.buffer.slice(b.byteOffset,b.byteOffset+b.length));"
              "const n=d.data.DicomMetaDictionary.naturalizeDataset(m.dict);"
              "console.log(n.SOPInstanceUID)")
    r = run(["node", "-e", script, path], env=dict(os.environ, NODE_PATH=str(node_modules)))
    return r.returncode == 0 and r.stdout.strip() != "", r.stderr.strip()[-200:]


def highdicom_seg(path):
    seg = hd.seg.segread(path)
    n = len(seg.SegmentSequence)
    seg.get_volume() if hasattr(seg, "get_volume") else None
    return n > 0, f"{n} segments"


def dcmqi_seg(path):
    with tempfile.TemporaryDirectory() as out:
        r = run([venv_bin / "segimage2itkimage", "--inputDICOM", path, "--outputDirectory", out])
        files = os.listdir(out)
        return r.returncode == 0 and any(f.endswith(".nrrd") for f in files), r.stderr.strip()[-200:]


def dsrdump(path):
    r = run(["dsrdump", "-Ee", "-Ec", path])
    return r.returncode == 0 and not r.stderr.strip(), r.stderr.strip()[:200]


def highdicom_sr(path):
    sr = hd.sr.srread(path)
    ok = isinstance(sr.content, hd.sr.MeasurementReport)
    groups = len(sr.content.get_volumetric_roi_measurement_groups()) if ok else 0
    return ok and groups > 0, f"{groups} measurement groups"


def dcmqi_sr(path):
    with tempfile.TemporaryDirectory() as out:
        target = pathlib.Path(out) / "sr.json"
        r = run([venv_bin / "tid1500reader", "--inputDICOM", path, "--outputMetadata", target])
        return r.returncode == 0 and target.exists(), r.stderr.strip()[-200:]


def sc_pixels(path):
    ds = pydicom.dcmread(path)
    a = ds.pixel_array
    ok = a.ndim == 3 and a.shape[2] == 3 and ds.PhotometricInterpretation == "RGB" and a.max() > 0
    return ok, f"pixels {a.shape}"


def dcm2pnm(path):
    with tempfile.TemporaryDirectory() as out:
        r = run(["dcm2pnm", "--write-png", path, pathlib.Path(out) / "image.png"])
        return r.returncode == 0 and (pathlib.Path(out) / "image.png").exists(), r.stderr.strip()[-200:]


def checks(sop_class):
    common = [("dciodvfy", dciodvfy), ("dcmjs", dcmjs)]
    if sop_class == SEG:
        return common + [("highdicom", highdicom_seg), ("dcmqi", dcmqi_seg)]
    if sop_class in SR:
        return common + [("dsrdump", dsrdump), ("highdicom", highdicom_sr), ("dcmqi", dcmqi_sr)]
    if sop_class == SC:
        return common + [("pydicom", sc_pixels), ("dcm2pnm", dcm2pnm)]
    return common


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__ + "\nusage: conformance/validate FOLDER")
    files = sorted(p for p in pathlib.Path(sys.argv[1]).rglob("*") if p.is_file())
    passed = failed = 0
    print(f"{'file':<40} {'object':<22} {'validator':<10} result")
    for f in files:
        try:
            sop_class = pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID
        except Exception:
            continue  # not DICOM (findings.json, say)
        kind = {SEG: "SEG", SC: "Secondary Capture"}.get(sop_class) or SR.get(sop_class, sop_class)
        for name, check in checks(sop_class):
            try:
                ok, detail = check(f)
            except Exception as e:  # a validator refusing the file is a failure, with its words
                ok, detail = False, f"{type(e).__name__}: {e}"[:200]
            passed += ok
            failed += not ok
            print(f"{f.name:<40} {kind:<22} {name:<10} {'pass' if ok else 'FAIL'}  {detail if not ok else ''}".rstrip())
    if passed + failed == 0:
        print(f"no DICOM files in {sys.argv[1]}")
        sys.exit(1)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


main()
