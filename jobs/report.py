"""Write (or rewrite) a sweep's report from its MLflow runs and log it to the sweep's parent run.

    python -m jobs.report --sweep tiny-20261121-113205
    python -m jobs.report            # the latest sweep

The sweep runs this itself when it ends; use it for a sweep that was interrupted, or after
changing the report code. It reads `<sweep.root>/<name>/sweep.json` for the grid and the MLflow
location, and writes `<sweep.root>/<name>/report/` (table.md, table.csv, figures/*.png).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import SweepConfig

DEFAULT_ROOT = SweepConfig().root


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default=None, help="the sweep's name (default: the latest sweep under --root)")
    p.add_argument("--root", default=DEFAULT_ROOT, help="where sweeps live (default: %(default)s)")
    p.add_argument("--no-figures", action="store_true",
                   help="only the table (markdown + CSV); skip the PNG figures (default: make them)")
    p.add_argument("--no-log", action="store_true",
                   help="write to disk only; do not log to the MLflow parent run (default: log)")
    p.add_argument("--readme", type=Path, default=None, metavar="PATH",
                   help=f"also paste the table into PATH between the lines {BEGIN!r} and {END!r} "
                        "(how README.md shows a real report; default: no)")
    p.add_argument("--section", default=SECTION, metavar="NAME",
                   help="with --readme: paste between '<!-- NAME:begin -->' and '<!-- NAME:end -->' "
                        "instead (one section per report; default: %(default)s)")
    return p.parse_args(argv)


SECTION = "sweep-report"
BEGIN, END = f"<!-- {SECTION}:begin -->", f"<!-- {SECTION}:end -->"


def paste_between_markers(path: Path, text: str, section: str = SECTION) -> None:
    """Replace what lies between the `<!-- section:begin -->` and `:end` lines of `path` with `text`."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    doc = path.read_text()
    if doc.count(begin) != 1 or doc.count(end) != 1 or doc.index(begin) > doc.index(end):
        raise ValueError(f"{path} needs exactly one {begin!r} line followed by one {end!r} line")
    head, rest = doc.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{begin}\n{text.rstrip()}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pipeline.sweep.record import SweepRecord, latest_sweep

    root = Path(args.root).expanduser().resolve()
    try:
        name = args.sweep or latest_sweep(root)
        if name is None:
            raise ValueError(f"no sweep under {root}")
        record = SweepRecord.load(root / name)
        from pipeline.report.build import build_report  # MLflow and plotting: after the checks

        report = build_report(record, figures=not args.no_figures, log=not args.no_log)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.readme is not None:
        try:
            paste_between_markers(args.readme, report.markdown, args.section)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(report.markdown)
    print(f"report: {report.directory}")
    if report.missing:
        print(f"{len(report.missing)} cells have no finished run: {', '.join(report.missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
