"""Read pulmo's SR with highdicom 0.28.2 (srread, then its TID 1500 classes) and compare every
number with findings.json. Prints "ok" and exits 0, or says what differs and exits 1.

    check_sr.py SR_FILE FINDINGS_JSON [DCMQI_JSON]

With DCMQI_JSON (what dcmqi's tid1500reader wrote from the same SR), its numbers are compared
with findings.json too."""
import json
import sys

import highdicom as hd

sr_path, findings_path = sys.argv[1], sys.argv[2]
findings = json.load(open(findings_path))
sr = hd.sr.srread(sr_path)
report = sr.content
if not isinstance(report, hd.sr.MeasurementReport):
    sys.exit(f"highdicom did not read a TID 1500 Measurement Report: {type(report)}")
groups = report.get_volumetric_roi_measurement_groups()
problems = []
got = {}
for g in groups:
    name = g.tracking_identifier
    got[name] = {m.name.meaning: (m.value, m.unit.value) for m in g.get_measurements()}

lobe_names = {"RUL": "right upper lobe", "RML": "right middle lobe", "RLL": "right lower lobe",
              "LUL": "left upper lobe", "LLL": "left lower lobe"}


def close(a, b, tol):
    return abs(float(a) - float(b)) <= tol


for key, name in lobe_names.items():
    want = findings["lobes"][key]
    m = got.get(name)
    if m is None:
        problems.append(f"no measurement group for {name}")
        continue
    for meaning, field, unit, tol in [
        ("Volume", "volume_ml", "cm3", 1e-3),
        ("Percentage of lobe opacified", "plo_percent", "%", 1e-3),
        ("Percentage of lobe with ground-glass opacity", "ggo_percent", "%", 1e-3),
        ("Percentage of lobe with consolidation", "consolidation_percent", "%", 1e-3),
        ("CT severity score", "ctss", "{score}", 0),
    ]:
        v = m.get(meaning)
        if v is None:
            problems.append(f"{name}: no {meaning}")
        elif v[1] != unit or not close(v[0], want[field], tol):
            problems.append(f"{name}: {meaning} {v} != {want[field]} {unit}")
    # The group references its segment in the lobes SEG.
    g = next(g for g in groups if g.tracking_identifier == name)
    seg = g.referenced_segment
    if seg is None:
        problems.append(f"{name}: no referenced segment")
    elif seg.referenced_segment_numbers != [list(lobe_names).index(key) + 1]:
        problems.append(f"{name}: references segment {seg.referenced_segment_numbers}")

w = findings["whole_lung"]
lung = got.get("whole lung", {})
for meaning, value, tol in [("Volume", w["volume_ml"], 1e-3),
                            ("Percentage of lungs opacified", w["plo_percent"], 1e-3),
                            ("Total CT severity score", w["ctss_total"], 0)]:
    if meaning not in lung or not close(lung[meaning][0], value, tol):
        problems.append(f"whole lung: {meaning} {lung.get(meaning)} != {value}")
covid = got.get("COVID-19 classifier", {})
p = covid.get("Probability of COVID-19 pneumonia pattern")
if p is None or not close(p[0], findings["covid_probability"], 1e-4):
    problems.append(f"COVID-19 probability {p} != {findings['covid_probability']}")

# dcmqi's reading of the same SR (3D Slicer's reader).
if len(sys.argv) > 3:
    d = json.load(open(sys.argv[3]))
    by_group = {m["TrackingIdentifier"]: {i["quantity"]["CodeMeaning"]: float(i["value"])
                                          for i in m["measurementItems"]}
                for m in d["Measurements"]}
    for key, name in lobe_names.items():
        want = findings["lobes"][key]
        g = by_group.get(name, {})
        for meaning, field in [("Volume", "volume_ml"), ("Percentage of lobe opacified", "plo_percent"),
                               ("CT severity score", "ctss")]:
            if meaning not in g or not close(g[meaning], want[field], 1e-3):
                problems.append(f"dcmqi {name}: {meaning} {g.get(meaning)} != {want[field]}")
    g = by_group.get("whole lung", {})
    if not close(g.get("Total CT severity score", -1), w["ctss_total"], 0):
        problems.append(f"dcmqi whole lung CTSS {g.get('Total CT severity score')}")
    g = by_group.get("COVID-19 classifier", {})
    if not close(g.get("Probability of COVID-19 pneumonia pattern", -1), findings["covid_probability"], 1e-4):
        problems.append("dcmqi COVID-19 probability differs")

# Document-level facts the issue asks for.
if sr.CompletionFlag != "COMPLETE" or sr.VerificationFlag != "UNVERIFIED":
    problems.append(f"flags {sr.CompletionFlag} {sr.VerificationFlag}")
schemes = [c.CodingSchemeDesignator for c in sr.CodingSchemeIdentificationSequence]
if "99PULMO" not in schemes:
    problems.append(f"99PULMO not declared: {schemes}")
evidence = {s.SeriesInstanceUID: len(s.ReferencedSOPSequence)
            for st in sr.CurrentRequestedProcedureEvidenceSequence for s in st.ReferencedSeriesSequence}
if len(evidence) != 3:
    problems.append(f"evidence lists {len(evidence)} series, not CT + 2 SEGs")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"ok {len(groups)} groups")
