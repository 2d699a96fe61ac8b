#!/usr/bin/env python
"""Entry point: `python run_all.py --grid smoke` (see README.md and `--help`)."""

import sys

from benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
