"""Speed and memory perf of protoseg-bench (not tests): `python -m perf.run`.

Each module measures one figure, prints a Markdown table with its target and PASS/FAIL, and
(unless `--no-append`) appends a dated section naming the machine to perf/RESULTS.md.
Ratios are measured side by side in one process: warm-up first, then A and B alternated,
medians reported (perf/common.py).
"""
