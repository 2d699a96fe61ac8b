"""`python -m benchmark.datasets check|convert`: verify a data set on disk, or copy it to the
Hugging Face format.

    python -m benchmark.datasets check camvid --root ../shared/data      # sample of pairs
    python -m benchmark.datasets check ade20k --root /data --full        # every pair
    python -m benchmark.datasets convert camvid --root ../shared/data --out /data/camvid_hf

Exit codes: 0 = fine, 1 = problems found (each named with its file and fix), 2 = bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.datasets import REAL_DATASETS, get_definition
from benchmark.datasets.base import DataError
from benchmark.datasets.roots import ENV_VAR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmark.datasets",
                                description="Check real data sets on disk; convert them to the "
                                            "Hugging Face format.")
    sub = p.add_subparsers(dest="command", required=True)
    names = list(REAL_DATASETS)
    root_help = (f"the data set's folder or a folder holding it under its default name; "
                 f"default ${ENV_VAR}, then ./data and ../shared/data")

    c = sub.add_parser("check", help="count, pair and sample-decode a data set")
    c.add_argument("name", choices=names)
    c.add_argument("--root", default="", help=root_help)
    c.add_argument("--format", default="native", choices=("native", "hf"),
                   help="native layout or a Hugging Face copy (save_to_disk / parquet)")
    c.add_argument("--full", action="store_true", help="decode every pair, not a sample")
    c.add_argument("--sample", type=int, default=8, help="pairs decoded per split (default 8)")
    c.add_argument("--split", action="append", default=None, help="only this split (repeatable)")

    v = sub.add_parser("convert", help="write a data set in the Hugging Face format")
    v.add_argument("name", choices=names)
    v.add_argument("--root", default="", help=root_help)
    v.add_argument("--out", required=True, help="new folder for the copy")
    v.add_argument("--to", default="disk", choices=("disk", "parquet"),
                   help="save_to_disk folder (default) or parquet files under data/")
    v.add_argument("--split", action="append", default=None, help="only this split (repeatable)")
    v.add_argument("--limit", type=int, default=0, help="at most N pairs per split (0 = all)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    definition = get_definition(args.name)
    splits = tuple(args.split) if args.split else None
    if args.command == "check":
        from benchmark.datasets.check import check_dataset

        try:
            for s in splits or ():
                definition.check_split(s)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        report = check_dataset(definition, args.root, args.format, full=args.full,
                               per_split=args.sample, splits=splits, progress=args.full)
        print(report.render())
        return 0 if report.ok else 1
    from benchmark.datasets.check import resolve_root
    from benchmark.datasets.hf import convert

    try:
        src = resolve_root(definition, args.root)
        counts = convert(definition, src, Path(args.out), args.to, splits, args.limit)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    rows = ", ".join(f"{s} {n}" for s, n in counts.items())
    print(f"wrote {definition.title} from {src} to {args.out} ({args.to}): {rows}")
    print(f"use it with --set data.format=hf --set data.root={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
