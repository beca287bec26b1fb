"""Probe behind the storescp bimodality note in BENCHMARKS.md ("Receiving"): 7 storescp transfers of
the full-size study, each after a pulmo node that only made its journal (`segments`) or also
received the study (`both`). Run from a folder holding the study as study/dicom after `make build`:

    python3 bench/storescp_after_pulmo.py segments|both

The cause, found on 2026-12-02: page-cache pages this VM has not used lately are slow to fill the
first time, and whatever was written before (pulmo's journal segments, earlier storescp output)
and is still on the disk leaves storescp only such pages; bench/receive.py now deletes each run's
files (BENCHMARKS.md, "storescp's slow spells, explained")."""
import subprocess, time, os, sys, shutil, pathlib, signal
import tempfile
env=dict(os.environ, TCP_NODELAY="1")
work = pathlib.Path(tempfile.mkdtemp())
mode=sys.argv[1]; res=[]
for i in range(7):
    if mode in ("segments", "both"):
        d=work / f"pn{i}"; shutil.rmtree(d, ignore_errors=True); d.mkdir()
        (d/"c.toml").write_text(f'[node]\nport = {12100+i}\n[storage]\ndata_dir = "{d}/data"\n[http]\nport = {12200+i}\n')
        p=subprocess.Popen([str(pathlib.Path(__file__).resolve().parent.parent / "target/release/pulmo"),"--config",str(d/"c.toml"),"serve"],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
        while len(list((d/"data/journal").glob("*.wal")))<8: time.sleep(0.05)
        if mode=="both":
            subprocess.run(["storescu","-aec","PULMO","-xe","+sd","+r","127.0.0.1",str(12100+i),"study/dicom"],env=env,check=True)
        p.send_signal(signal.SIGTERM); p.wait()
    out=work / f"bo{i}"; shutil.rmtree(out, ignore_errors=True); out.mkdir()
    s=subprocess.Popen(["storescp","--fork","-od",str(out),"-aet","STORESCP","12001"],env=env)
    time.sleep(0.5); os.sync(); time.sleep(1)
    t=time.perf_counter()
    subprocess.run(["storescu","-aec","STORESCP","-xe","+sd","+r","127.0.0.1","12001","study/dicom"],env=env,check=True)
    res.append(time.perf_counter()-t)
    s.terminate(); s.wait()
print(mode, " ".join(f"{r:.2f}" for r in res))
shutil.rmtree(work, ignore_errors=True)
