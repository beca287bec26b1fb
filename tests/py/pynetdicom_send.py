"""Send every DICOM file under DIR to AE@HOST:PORT with pynetdicom (an SCU independent of DCMTK and
pulmo). Prints "ok N" when every C-STORE got Success, else the failures, and exits non-zero."""
import pathlib
import sys

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

target, folder = sys.argv[1], pathlib.Path(sys.argv[2])
aet, hostport = target.split("@")
host, port = hostport.rsplit(":", 1)
files = sorted(folder.rglob("*.dcm"))
ae = AE(ae_title="PYNETDICOM")
ae.add_requested_context(CTImageStorage, [pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID])
assoc = ae.associate(host, int(port), ae_title=aet)
if not assoc.is_established:
    sys.exit("association failed")
bad = []
for f in files:
    status = assoc.send_c_store(pydicom.dcmread(f))
    if not status or status.Status != 0:
        bad.append((f.name, status))
assoc.release()
if bad:
    sys.exit(f"failed: {bad[:5]}")
print(f"ok {len(files)}")
