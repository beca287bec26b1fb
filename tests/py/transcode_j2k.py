"""Transcode every DICOM file in SRC to JPEG 2000 Lossless in DST with pydicom + pylibjpeg-openjpeg
(an encoder independent of pulmo), so that pulmo's JPEG 2000 reading can be tested."""
import pathlib
import sys

import pydicom
from pydicom.uid import JPEG2000Lossless

src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
n = 0
for path in sorted(src.rglob("*.dcm")):
    ds = pydicom.dcmread(path)
    ds.compress(JPEG2000Lossless)
    ds.save_as(dst / path.name, enforce_file_format=True)
    n += 1
print(n)
