"""Speed and memory benchmarks of protoseg-bench (not tests): `python -m benchmarks.run`.

Each module measures one figure, prints a Markdown table with its target and PASS/FAIL, and
(unless `--no-append`) appends a dated section naming the machine to benchmarks/RESULTS.md.
Ratios are measured side by side in one process: warm-up first, then A and B alternated,
medians reported (benchmarks/common.py).
"""
