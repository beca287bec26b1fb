"""A hostile or broken peer, made of pynetdicom (an SCU independent of pulmo): it sends files as
they are, undecoded (pynetdicom's chunked sending of a file's raw data set), from a chosen local
address, on one or several associations at once.

  hostile_peer.py store PORT BIND FILE...       one association; a line per file: its status
  hostile_peer.py parallel PORT BIND N FILE     N associations at once, each sending FILE
  hostile_peer.py echo PORT BIND                one C-ECHO: "ok SECONDS", or how it failed

A status line is "status 0xC000", or "none" when no response came (association aborted)."""
import logging
import sys
import threading
import time

from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification

_config.STORE_SEND_CHUNKED_DATASET = True


class Said(logging.Handler):
    """What pynetdicom logs of a rejection (the A-ASSOCIATE-RJ's result, source and reason), and
    everything else it logs, for when an association is neither established nor rejected."""

    lines = []
    everything = []

    def emit(self, record):
        msg = record.getMessage()
        Said.everything.append(f"{record.levelname} {msg}")
        if msg.startswith(("Result:", "Reason:")):
            Said.lines.append(msg)


logging.getLogger("pynetdicom").addHandler(Said())
logging.getLogger("pynetdicom").setLevel(logging.INFO)
EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"


def associate(port, bind, context):
    ae = AE(ae_title="HOSTILE")
    ae.acse_timeout = 30
    ae.dimse_timeout = 30
    ae.network_timeout = 30
    ae.add_requested_context(context, [EXPLICIT, IMPLICIT])
    return ae.associate("127.0.0.1", port, ae_title="PULMO", bind_address=(bind, 0))


def store(port, bind, files):
    assoc = associate(port, bind, CTImageStorage)
    if not assoc.is_established:
        return ["not established"] * len(files)
    out = []
    for f in files:
        status = assoc.send_c_store(f)
        out.append(f"status 0x{status.Status:04X}" if status and "Status" in status else "none")
        if not assoc.is_established:
            break
    if assoc.is_established:
        assoc.release()
    return out


def main():
    cmd, port, bind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if cmd == "store":
        print("\n".join(store(port, bind, sys.argv[4:])))
    elif cmd == "parallel":
        n, f = int(sys.argv[4]), sys.argv[5]
        results = [None] * n

        def one(i):
            results[i] = store(port, bind, [f])[0]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("\n".join(results))
    elif cmd == "echo":
        t = time.monotonic()
        assoc = associate(port, bind, Verification)
        if assoc.is_rejected:
            print("rejected " + "; ".join(Said.lines))
            return
        if not assoc.is_established:
            print(f"not established after {time.monotonic() - t:.1f} s: " + " | ".join(Said.everything))
            return
        status = assoc.send_c_echo()
        assoc.release()
        ok = status and status.Status == 0
        print(f"ok {time.monotonic() - t:.3f}" if ok else "failed")
    else:
        sys.exit(f"unknown command {cmd}")


main()
