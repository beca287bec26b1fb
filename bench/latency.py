"""Benchmark: end-to-end latency of the product as a hospital meets it, on CPU. Orthanc (the PACS,
configured from conformance/orthanc/) receives a full-size phantom study from storescu; its routing
rule sends the study to `pulmo serve` (conformance/orthanc/pulmo.toml, the shipped models); pulmo
analyses it and sends the two SEGs, the SR and the overlay series back into the same study.

Latency = (Orthanc holds every result object) - (pulmo received the study's last instance)
- pulmo's stable_after; split into: waiting for the job to start beyond stable_after (the job
poll), each analysis stage (the job's findings.json), writing and indexing the results, and
delivery until Orthanc has stored everything (polled over REST every 50 ms). The peak memory of the
node (VmHWM of `pulmo serve` over the whole run) is printed too. Medians of RUNS
studies (default 3), each a different phantom seed. Run from the repository root after `make build`:

    build/venv/bin/python bench/latency.py [MODELS_DIR]"""
import json
import os
import re
import pathlib
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request

root = pathlib.Path(__file__).resolve().parent.parent
pulmo = root / "target/release/pulmo"
runs = int(os.environ.get("RUNS", "3"))
models = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else root / "models").resolve()
STABLE_S = 2
work = pathlib.Path(tempfile.mkdtemp())
env = dict(os.environ, TCP_NODELAY="1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def toml_value(v):
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


def write_toml(cfg, path):
    lines = []
    for k, v in cfg.items():
        if not isinstance(v, (dict, list)) or (isinstance(v, list) and not any(isinstance(x, dict) for x in v)):
            lines.append(f"{k} = {toml_value(v)}")
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{a} = {toml_value(b)}" for a, b in v.items()]
        elif isinstance(v, list) and any(isinstance(x, dict) for x in v):
            for item in v:
                lines.append(f"\n[[{k}]]")
                lines += [f"{a} = {toml_value(b)}" for a, b in item.items()]
    path.write_text("\n".join(lines) + "\n")


def main():
    http, o_dicom, p_port, p_http = free_port(), free_port(), free_port(), free_port()
    example = json.loads((root / "conformance/orthanc/orthanc.json").read_text())
    (work / "orthanc").mkdir()
    example.update({
        "StorageDirectory": str(work / "orthanc"), "IndexDirectory": str(work / "orthanc"),
        "HttpPort": http, "DicomPort": o_dicom, "StableAge": STABLE_S,
        "DicomModalities": {"pulmo": [example["DicomModalities"]["pulmo"][0], "127.0.0.1", p_port]},
        "LuaScripts": [str(root / "conformance/orthanc/route-to-pulmo.lua")],
    })
    (work / "orthanc.json").write_text(json.dumps(example))
    cfg = tomllib.loads((root / "conformance/orthanc/pulmo.toml").read_text())
    cfg["node"]["port"] = p_port
    cfg["storage"].update(data_dir=str(work / "pulmo"), stable_after_s=STABLE_S)
    for d in cfg["destinations"]:
        d["port"] = o_dicom
    cfg["http"] = {"port": p_http}
    cfg["inference"] = {"models_dir": str(models), "execution_providers": ["cpu"]}
    write_toml(cfg, work / "pulmo.toml")

    orthanc = subprocess.Popen(["/usr/sbin/Orthanc", str(work / "orthanc.json")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    node = subprocess.Popen([str(pulmo), "--config", str(work / "pulmo.toml"), "serve"], stdout=subprocess.DEVNULL,
                            stderr=open(work / "pulmo.log", "w"))
    base = f"http://127.0.0.1:{http}"
    for _ in range(300):
        try:
            get(base + "/system")
            break
        except OSError:
            time.sleep(0.1)
    rows = []
    try:
        for i in range(runs):
            seed = 4100 + i
            study = work / f"study-{seed}"
            subprocess.run([pulmo, "phantom", "--out", study, "--seed", str(seed), "--size", "full"],
                           check=True, capture_output=True)
            uid = json.loads((study / "truth/truth.json").read_text())["study_instance_uid"]
            ct = len(list((study / "dicom").rglob("*.dcm")))
            subprocess.run(["storescu", "-aec", "ORTHANC", "+sd", "+r", "127.0.0.1", str(o_dicom), study / "dicom"],
                           check=True, env=env, capture_output=True)
            req = urllib.request.Request(base + "/tools/lookup", data=uid.encode(), method="POST")
            with urllib.request.urlopen(req, timeout=10) as r:
                study_id = [x["ID"] for x in json.loads(r.read()) if x["Type"] == "Study"][0]
            rows.append(measure(base, uid, study_id, ct))
            print(f"run {i + 1}: {rows[-1]['latency']:.1f} s", file=sys.stderr)
        # Peak resident memory of the node over the whole run, read before it stops.
        status = pathlib.Path(f"/proc/{node.pid}/status").read_text()
        rss = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait()
        orthanc.terminate()
        orthanc.wait()
    report(rows, rss)


def measure(base, uid, study_id, ct):
    db = work / "pulmo" / "pulmo.sqlite"
    deadline = time.time() + 900
    job = None
    while time.time() < deadline:
        time.sleep(0.05)
        if not db.exists():
            continue
        con = sqlite3.connect(db, timeout=10)
        job = con.execute("SELECT id, state, created_ms FROM jobs WHERE study_uid = ? ORDER BY id DESC",
                          (uid,)).fetchone()
        expected = con.execute("SELECT count(*) FROM deliveries WHERE job_id = ?", (job[0],)).fetchone()[0] \
            if job else 0
        con.close()
        if not job or job[1] not in ("delivering", "done") or expected == 0:
            continue
        if len(get(f"{base}/studies/{study_id}/instances")) >= ct + expected:
            stored_ms = time.time() * 1000
            break
    else:
        raise SystemExit(f"results of {uid} did not reach Orthanc: see {work}/pulmo.log")
    con = sqlite3.connect(db, timeout=10)
    last_ms = con.execute("SELECT last_received_ms FROM studies WHERE study_uid = ?", (uid,)).fetchone()[0]
    delivered_ms = con.execute("SELECT max(updated_ms) FROM deliveries WHERE job_id = ?", (job[0],)).fetchone()[0]
    con.close()
    # The job's "stage timings" log line: analysis stages (as in findings.json) and "seg", the time
    # to build and write the SEGs, the SR and the overlay series.
    log = re.sub(r"\x1b\[[0-9;]*m", "", (work / "pulmo.log").read_text())
    line = [ln for ln in log.splitlines() if "stage timings" in ln and uid in ln][-1]
    stages = {k: float(v.rstrip("s\"")) for k, v in
              (t.split("=", 1) for t in line.split("stages=", 1)[1].strip('"').split() if "=" in t)}
    top = ["read", "lobes", "lung", "lobes_on_lung", "opacities", "opacities_postprocess", "classifier",
           "thin_opacities", "measure", "seg"]
    latency = (stored_ms - last_ms) / 1000 - STABLE_S
    return {
        "latency": latency,
        "job start beyond stable_after (job poll)": (job[2] - last_ms) / 1000 - STABLE_S,
        **{f"{k}": stages.get(k, 0.0) for k in top},
        # After the stages: fsync of the results, the outbox, associations and C-STOREs.
        "results durable + delivery (last C-STORE answered)": (delivered_ms - job[2]) / 1000
        - sum(stages.get(k, 0.0) for k in top),
        "until Orthanc's REST shows them all (50 ms poll)": (stored_ms - delivered_ms) / 1000,
        "_model": {k: stages.get(k, 0.0) for k in ("lobes_model", "opacities_model")},
    }


def report(rows, rss):
    models_s = [r.pop("_model") for r in rows]
    keys = [k for k in rows[0] if k != "latency"]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    total = med["latency"]
    print(f"| part | seconds (median of {len(rows)}) | share of the latency |")
    print("| --- | --- | --- |")
    for k in keys:
        print(f"| {k} | {med[k]:.2f} | {100 * med[k] / total:.0f} % |")
    print(f"| **latency** (last instance received → all results in Orthanc, minus stable_after) | "
          f"**{total:.2f}** | 100 % |")
    for k in ("lobes_model", "opacities_model"):
        print(f"\n{k} (ONNX Runtime inside the stage above): {statistics.median(m[k] for m in models_s):.2f} s", end="")
    print(f"\n\nPeak memory of `pulmo serve` (max RSS over the whole run): {rss:.0f} MiB. Models: {models}.")


if __name__ == "__main__":
    try:
        main()
    finally:
        if os.environ.get("KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)
