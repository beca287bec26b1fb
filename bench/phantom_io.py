"""Benchmark: write and read a full-size phantom study (512 x 512 x ~300), pulmo vs pydicom, in one
run, medians of RUNS runs (default 5). Run from the repository root after `make build`:

    build/venv/bin/python bench/phantom_io.py

Prints a Markdown table for BENCHMARKS.md. Peak memory is the maximum resident set size of the
process (GNU time)."""
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

root = pathlib.Path(__file__).resolve().parent.parent
pulmo = root / "target/release/pulmo"
py = sys.executable
runs = int(os.environ.get("RUNS", "5"))


def timed(cmd):
    with tempfile.NamedTemporaryFile() as t:
        out = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", t.name, *map(str, cmd)],
                             check=True, capture_output=True, text=True).stdout
        wall, rss = open(t.name).read().split()[-2:]
    return out, float(wall), int(rss) / 1024.0


rows = {k: [] for k in ["gen", "write", "gen_rss", "read", "read_rss", "peer_write", "peer_read", "peer_read_rss"]}
work = pathlib.Path(tempfile.mkdtemp())
try:
    for _ in range(runs):
        shutil.rmtree(work, ignore_errors=True)
        out, _, rss = timed([pulmo, "phantom", "--out", work / "s", "--seed", 1, "--size", "full"])
        g, w = map(float, re.search(r"generated in ([\d.]+) s, DICOM written in ([\d.]+) s", out).groups())
        rows["gen"].append(g); rows["write"].append(w); rows["gen_rss"].append(rss)
        _, wall, rss = timed([pulmo, "inspect", work / "s/dicom"])
        rows["read"].append(wall); rows["read_rss"].append(rss)
        out, _, _ = timed([py, root / "bench/pydicom_peer.py", "write", work / "s/dicom", work / "peer"])
        rows["peer_write"].append(float(out.split()[0]))
        out, wall, rss = timed([py, root / "bench/pydicom_peer.py", "read", work / "s/dicom"])
        rows["peer_read"].append(float(out.split()[0])); rows["peer_read_rss"].append(rss)
finally:
    shutil.rmtree(work, ignore_errors=True)

m = {k: statistics.median(v) for k, v in rows.items()}
print(f"| step | pulmo | pydicom 3.0.2 | pydicom / pulmo |")
print(f"| --- | --- | --- | --- |")
print(f"| generate the phantom (in memory) | {m['gen']:.2f} s | – | – |")
print(f"| write 1 series, explicit VR LE | {m['write']:.2f} s | {m['peer_write']:.2f} s | {m['peer_write']/m['write']:.1f} |")
print(f"| read + decode + sort + HU volume | {m['read']:.2f} s | {m['peer_read']:.2f} s | {m['peer_read']/m['read']:.1f} |")
print(f"| peak memory, generate + write | {m['gen_rss']:.0f} MiB | – | – |")
print(f"| peak memory, read | {m['read_rss']:.0f} MiB | {m['peer_read_rss']:.0f} MiB | {m['peer_read_rss']/m['read_rss']:.1f} |")
print(f"\n{runs} runs, medians. pulmo read = `pulmo inspect` (scan, select, decode, volume, statistics);"
      " pydicom read excludes interpreter start-up, pulmo's includes process start.")
