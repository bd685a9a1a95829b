#!/usr/bin/env python3
"""Rewrite the results table in README.md (between the results markers) from
results/bert-base-w1a4-seq128-{lan,wan}.json and results/machine.txt, and the accuracy
table (between the accuracy markers) from results/accuracy.csv. With --accuracy-only,
only the accuracy table (results/machine.txt may describe another run than the JSONs)."""
import json
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
accuracy_only = "--accuracy-only" in sys.argv[1:]
rows = []
for net in ("lan", "wan"):
    p = root / "results" / f"bert-base-w1a4-seq128-{net}.json"
    if p.exists():
        rows.append(json.loads(p.read_text()))
machine = (root / "results" / "machine.txt").read_text().strip().replace("\n", "; ")
t = f"{machine}. Backend: {rows[0]['backend'] if rows else '?'}.\n\n"
t += "| model | quant | seq | net | online s | online MB (P0→P1 / P1→P0) | rounds | offline s | dealer material to P0 / P1 (GB) | verified |\n"
t += "|---|---|---|---|---|---|---|---|---|---|\n"
for d in rows:
    t += (f"| {d['model']} | {d['quant']} | {d['seq']} | {d['net']} | {d['online_s']:.2f} | "
          f"{d['online_bytes'] / 1e6:.0f} ({d['online_bytes_p0_to_p1'] / 1e6:.0f} / {d['online_bytes_p1_to_p0'] / 1e6:.0f}) | "
          f"{d['rounds']} | {d['offline_s']:.1f} | {d['dealer_bytes_p0'] / 1e9:.2f} / {d['dealer_bytes_p1'] / 1e9:.2f} | {d['verified']} |\n")
if rows:
    d = rows[0]
    t += ("\nPer operation (the lan run, summed over the 12 layers; times are the slower party's wall "
          "time in that step, waiting on the link included):\n\n")
    t += "| op | online ms | MB P0→P1 | MB P1→P0 | rounds | dealer MB |\n|---|---|---|---|---|---|\n"
    for o in d["ops"]:
        if o["op"] == "other":
            continue
        t += (f"| {o['op']} | {o['online_ms']:.0f} | {o['mb_p0_to_p1']:.1f} | {o['mb_p1_to_p0']:.1f} | "
              f"{o['rounds']} | {o['dealer_mb']:.0f} |\n")
readme = root / "README.md"
if not accuracy_only:
    s = readme.read_text()
    s = re.sub(r"(<!-- results:start -->\n).*?(<!-- results:end -->)", lambda m: m.group(1) + t + m.group(2),
               s, flags=re.S)
    readme.write_text(s)

# the accuracy study (harness eval), between the accuracy markers
acc = root / "results" / "accuracy.csv"
if acc.exists():
    import csv
    rows = list(csv.DictReader(acc.open()))
    pct = lambda v: f"{100 * float(v):.1f}" if v not in ("", None) else "-"
    num = lambda v, f: format(float(v), f) if v not in ("", None) else "-"
    a = ("| config | head | mode | test snippets | accuracy % | agrees with plaintext % | "
         "bit-exact % | embedding cosine (mean / worst) | online s per snippet | online MB |\n")
    a += "|---|---|---|---|---|---|---|---|---|---|\n"
    for r in rows:
        cos = (f"{num(r['cos_mean'], '.3f')} / {num(r['cos_worst'], '.3f')}"
               if r["cos_mean"] else "-")
        a += (f"| {r['config']} | {r['head']} | {r['mode']} | {r['n']} | {pct(r['accuracy'])} | "
              f"{pct(r['agreement'])} | {pct(r['verified'])} | {cos} | "
              f"{num(r['online_s_mean'], '.3f')} | {num(r['online_mb_mean'], '.1f')} |\n")
    s = readme.read_text()
    s = re.sub(r"(<!-- accuracy:start -->\n).*?(<!-- accuracy:end -->)",
               lambda m: m.group(1) + a + m.group(2), s, flags=re.S)
    readme.write_text(s)
