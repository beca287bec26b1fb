"""Build one Enhanced CT Image Storage (multi-frame) instance from the single-frame CT files in SRC,
with pydicom (independent of pulmo). Frames are stored in a scrambled order and the rescale lives
only in the shared functional groups, so a reader must use the geometry and the functional groups."""
import pathlib
import random
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
slices = [pydicom.dcmread(p) for p in sorted(src.rglob("*.dcm"))]
slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
order = list(range(len(slices)))
random.Random(7).shuffle(order)
first = slices[0]

meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
meta.MediaStorageSOPInstanceUID = generate_uid()
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds = Dataset()
ds.file_meta = meta
for kw in ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
           "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
           "FrameOfReferenceUID", "Manufacturer"]:
    setattr(ds, kw, getattr(first, kw))
ds.SOPClassUID = meta.MediaStorageSOPClassUID
ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
ds.SeriesInstanceUID = generate_uid()
ds.SeriesNumber = 5
ds.SeriesDescription = "ENHANCED LUNG"
ds.Modality = "CT"
ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
ds.Rows, ds.Columns = first.Rows, first.Columns
ds.SamplesPerPixel = 1
ds.PhotometricInterpretation = "MONOCHROME2"
ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
ds.NumberOfFrames = len(slices)

shared = Dataset()
pm = Dataset()
pm.PixelSpacing = first.PixelSpacing
pm.SliceThickness = first.SliceThickness
shared.PixelMeasuresSequence = [pm]
po = Dataset()
po.ImageOrientationPatient = first.ImageOrientationPatient
shared.PlaneOrientationSequence = [po]
pvt = Dataset()
pvt.RescaleIntercept = first.RescaleIntercept
pvt.RescaleSlope = first.RescaleSlope
pvt.RescaleType = "HU"
shared.PixelValueTransformationSequence = [pvt]
ds.SharedFunctionalGroupsSequence = [shared]

per_frame, frames = [], []
for n in order:
    s = slices[n]
    pf = Dataset()
    pp = Dataset()
    pp.ImagePositionPatient = s.ImagePositionPatient
    pf.PlanePositionSequence = [pp]
    per_frame.append(pf)
    frames.append(s.pixel_array.astype(np.uint16))
ds.PerFrameFunctionalGroupsSequence = per_frame
ds.PixelData = np.stack(frames).tobytes()
ds.save_as(out, enforce_file_format=True)
print(len(frames))
