"""Benchmark: receive a full-size phantom study (512 x 512 x ~300, explicit VR LE) over 1 and over 4
associations, pulmo serve against DCMTK storescp, in one run, medians of RUNS runs (default 3).
Both peers run with TCP_NODELAY=1 (storescu, storescp); storescp forks per association (--fork).
pulmo writes durably before Success (each instance flushed into its preallocated journal segment
and indexed in SQLite; spool files written and synced in batches behind); storescp writes without
fsync. Run from the repository root after `make build`:

    build/venv/bin/python bench/receive.py

RUNS=N: runs (default 3). ONLY=pulmo or ONLY=storescp: one side alone. Each run's files are
deleted after it: kept, they made storescp's later runs 2-3 times slower (its data goes into
page-cache pages new to the VM, slow to fill the first time; BENCHMARKS.md, "Receiving").
ASSOC_CASES=1: the single-association case only. NODE_EXTRA: more lines for pulmo's [node] table.
STORESCP_PDU: storescp's --max-pdu (default 65536, pulmo's default max_pdu_length).
PULMO=path: another pulmo binary. PULMO_B=path: A/B mode, two pulmo builds (PULMO, or this checkout's,
against PULMO_B) instead of pulmo against storescp, their order swapped every run, and the median of
the per-run ratios (A time / B time) as well as the medians: on a noisy machine, paired runs show
a 5 % change that two separate sets of medians cannot."""
import os
import resource
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

root = pathlib.Path(__file__).resolve().parent.parent
pulmo = pathlib.Path(os.environ.get("PULMO", root / "target/release/pulmo"))
pulmo_b = pathlib.Path(os.environ["PULMO_B"]) if os.environ.get("PULMO_B") else None
binaries = {"pulmo": pulmo, "pulmo-b": pulmo_b}
runs = int(os.environ.get("RUNS", "3"))
env = dict(os.environ, TCP_NODELAY="1")
work = pathlib.Path(tempfile.mkdtemp())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def cpu_of(pid):
    """CPU seconds (user + system) of a process and of its children that have been reaped."""
    f = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in f[11:15]) / os.sysconf("SC_CLK_TCK")


def node_pid(p):
    """The node under /usr/bin/time."""
    for _ in range(100):
        kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        if kids:
            return int(kids[0])
        time.sleep(0.02)
    raise SystemExit("the node did not start")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def send(port, aet, dirs):
    """Seconds of the transfer, and the CPU seconds the storescu processes used."""
    c = children_cpu()
    t = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", aet, "-xe", "-R", "+sd", "+r", "127.0.0.1", str(port), d],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for d in dirs]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(p.stderr.read().decode())
    return time.perf_counter() - t, children_cpu() - c


def node(kind, port, out):
    out.mkdir(parents=True)
    if kind.startswith("pulmo"):
        cfg = out / "pulmo.toml"
        cfg.write_text(f'[node]\nport = {port}\n{os.environ.get("NODE_EXTRA", "")}\n[storage]\ndata_dir = "{out / "data"}"\n'
                       f'[http]\nport = {free_port()}\n')
        cmd = [binaries[kind], "--config", cfg, "serve"]
    else:
        # The same largest PDU as pulmo's default (storescp's own default is 16 KiB, which makes
        # storescu send four times as many PDUs).
        cmd = ["storescp", "--fork", "--max-pdu", os.environ.get("STORESCP_PDU", "65536"), "-od", out,
               "-aet", "STORESCP", str(port)]
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", out / "rss", *map(str, cmd)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    if kind.startswith("pulmo"):
        # The journal's first segments are made when the node starts (a node that has run before
        # has them already): measure the steady state.
        for _ in range(200):
            if len(list((out / "data" / "journal").glob("*.wal"))) >= 8:
                break
            time.sleep(0.05)
        else:
            raise SystemExit("the journal's segments were not made")
    return p


def stop(p, out):
    child = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    for c in child:
        os.kill(int(c), signal.SIGTERM)
    p.wait()
    try:
        return int((out / "rss").read_text().split()[-1]) / 1024
    except (OSError, ValueError, IndexError):
        return float("nan")


try:
    study = work / "study"
    subprocess.run([pulmo, "phantom", "--out", study, "--seed", "1", "--size", "full"], check=True,
                   capture_output=True)
    files = sorted((study / "dicom").rglob("*.dcm"))
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    quarters = []
    for q in range(4):
        d = work / f"q{q}"
        d.mkdir()
        for f in files[q::4]:
            os.link(f, d / f.name)
        quarters.append(d)
    res = {}
    cpus = {}
    cases = [(1, [study / "dicom"]), (4, quarters)][:int(os.environ.get("ASSOC_CASES", "2"))]
    if pulmo_b:
        sides = [("pulmo", "PULMO"), ("pulmo-b", "PULMO")]
    else:
        sides = [(k, a) for k, a in [("pulmo", "PULMO"), ("storescp", "STORESCP")]
                 if not os.environ.get("ONLY") or os.environ["ONLY"] == k]
    for i in range(runs):
        # A/B: the order swapped every run, so that a drift of the machine favours neither.
        for kind, aet in (sides if not pulmo_b or i % 2 == 0 else sides[::-1]):
            for assocs, dirs in cases:
                out = work / f"{kind}-{assocs}-{i}"
                port = free_port()
                p = node(kind, port, out)
                # Both sides start from a disk with nothing left to write back from the last run
                # (neither's transfer time includes its own writeback).
                os.sync()
                time.sleep(1)
                pid = node_pid(p)
                before = cpu_of(pid)
                secs, sender = send(port, aet, [str(d) for d in dirs])
                # storescp's forked children are counted once it has reaped them.
                time.sleep(0.3)
                cpu = cpu_of(pid) - before
                rss = stop(p, out)
                # Free what the run wrote: on this VM, page-cache pages the guest has not used
                # lately are slow to fill the first time (host page faults; BENCHMARKS.md,
                # "Receiving"), so a peer whose files pile up gets slower run after run.
                shutil.rmtree(out, ignore_errors=True)
                res.setdefault((kind, assocs), []).append((secs, rss))
                cpus.setdefault((kind, assocs), []).append(cpu)
                cpus.setdefault((f"storescu to {kind}", assocs), []).append(sender)
    kinds = [k for k, _ in sides]
    for assocs, _ in cases:
        print(f"{assocs} association(s), each run " + " / ".join(kinds) + " s:",
              ", ".join("/".join(f"{res[k, assocs][i][0]:.2f}" for k in kinds) for i in range(runs)))
        for kind in kinds + [f"storescu to {k}" for k in kinds]:
            if cpus.get((kind, assocs)):
                print(f"  {kind} CPU (user + system) s, median of {len(cpus[kind, assocs])}: "
                      f"{statistics.median(cpus[kind, assocs]):.3f} (runs: "
                      + ", ".join(f"{c:.2f}" for c in cpus[kind, assocs]) + ")")
    print(f"\nStudy: {len(files)} files, {size_mb:.0f} MB. {runs} runs, medians.\n")
    if pulmo_b:
        print(f"A = {pulmo}, B = {pulmo_b}\n")
        print("| associations | A | B | A time / B time, median of the paired runs | A CPU | B CPU |")
        print("| --- | --- | --- | --- | --- | --- |")
        for assocs, _ in cases:
            a = [t for t, _ in res["pulmo", assocs]]
            b = [t for t, _ in res["pulmo-b", assocs]]
            ratio = statistics.median(x / y for x, y in zip(a, b))
            print(f"| {assocs} | {statistics.median(a):.3f} s | {statistics.median(b):.3f} s | {ratio:.3f} "
                  f"| {statistics.median(cpus['pulmo', assocs]):.3f} s | {statistics.median(cpus['pulmo-b', assocs]):.3f} s |")
    else:
        # The ratio of the medians, and the median of each run's own ratio (the two sides of a run
        # ran back to back, so a slow phase of the machine touches both).
        print("| associations | pulmo (durable) | storescp | storescp time / pulmo time | median of the runs' ratios | pulmo peak RSS |")
        print("| --- | --- | --- | --- | --- | --- |")
        med = lambda k, assocs, f: statistics.median(f(x) for x in res[k, assocs]) if (k, assocs) in res else float("nan")  # noqa: E731
        for assocs, _ in cases:
            p = med("pulmo", assocs, lambda x: x[0])
            d = med("storescp", assocs, lambda x: x[0])
            rss = med("pulmo", assocs, lambda x: x[1])
            paired = (statistics.median(s / q for (q, _), (s, _) in zip(res["pulmo", assocs], res["storescp", assocs]))
                      if ("pulmo", assocs) in res and ("storescp", assocs) in res else float("nan"))
            print(f"| {assocs} | {p:.2f} s ({size_mb / p:.0f} MB/s) | {d:.2f} s ({size_mb / d:.0f} MB/s) | {d / p:.2f} "
                  f"| {paired:.2f} | {rss:.0f} MiB |")
finally:
    shutil.rmtree(work, ignore_errors=True)
