#!/usr/bin/env python
"""Entry point: `python run_all.py --grid smoke` (see README.md and `--help`)."""

import sys

try:
    from benchmark.stops import run_guarded  # signals, closed pipes, full disks: one line
except KeyboardInterrupt:  # Ctrl-C in the first milliseconds, before the handlers are in
    sys.stderr.write("interrupted by SIGINT during start-up; nothing was done: run the same "
                     "command again\n")
    sys.exit(3)

if __name__ == "__main__":
    sys.exit(run_guarded("benchmark.cli"))
