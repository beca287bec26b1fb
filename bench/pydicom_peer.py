"""The peer of the phantom I/O benchmark: pydicom 3.0.2 + numpy doing what pulmo does.

read DIR        : read every file, decode pixels, apply rescale, sort by position into a volume
write DIR OUT   : write the volume of DIR again as one file per slice (headers copied), timed
Prints the timed part in seconds."""
import pathlib
import sys
import time

import numpy as np
import pydicom


def read(d):
    files = sorted(pathlib.Path(d).rglob("*.dcm"))
    slices = [pydicom.dcmread(f) for f in files]
    slices.sort(key=lambda s: float(s.ImagePositionPatient[2]))
    vol = np.stack([s.pixel_array.astype(np.float32) * float(s.RescaleSlope) + float(s.RescaleIntercept)
                    for s in slices]).round().astype(np.int16)
    return slices, vol


if sys.argv[1] == "read":
    t0 = time.perf_counter()
    _, vol = read(sys.argv[2])
    print(f"{time.perf_counter() - t0:.3f} {vol.shape}")
else:
    slices, vol = read(sys.argv[2])
    out = pathlib.Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for k, s in enumerate(slices):
        s.PixelData = (vol[k].astype(np.int32) - int(s.RescaleIntercept)).astype(np.uint16).tobytes()
        s.save_as(out / f"{k:04d}.dcm", enforce_file_format=True)
    print(f"{time.perf_counter() - t0:.3f}")
