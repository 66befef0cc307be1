"""Build the Markdown tables in results/tables/ from the runs in results/runs/ (the code: src/gal/report/).

    python scripts/make_tables.py table5 table5_alpha     # what `make reproduce-regression` runs
    python scripts/make_tables.py table1 table2 table3 table4 digits
    python scripts/make_tables.py --make-rows             # paper_rows.mk from results/paper/*.yaml
    python scripts/make_tables.py --readme                # the README's paper table from results/paper/readme.yaml
    python scripts/make_tables.py table5_readings tuned   # what `make table5-readings` and `make tuned` end with

Every number comes from a metrics.json written by `python -m gal`; a row with no runs is marked missing with the
reason (the data set's own error, or the command to run). The footer's date is today's, or SOURCE_DATE_EPOCH's.
A table already written is not replaced by one with fewer filled cells or without one of its sections (built from
fewer runs: gal.report.keep): the command says which runs are missing and exits with status 1; --force replaces it.
"""

import argparse
import sys
from pathlib import Path

from gal.report import TABLES, build_date
from gal.report.ablations import adarem_confirm_targets
from gal.report.keep import held_back
from gal.report.paper import MAKE_ROWS_FILE, ROOT, make_rows, with_readme_table
from gal.report.readings import confirm_targets as readings_confirm_targets
from gal.report.tuned import best_overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="*", help=f"which tables to build: {', '.join(sorted(TABLES))}")
    parser.add_argument(
        "--adarem-confirm-targets", action="store_true",
        help="print the make targets that run each optimizer's best AdaRem cell with seeds 0-19 (`make confirm`)",
    )  # fmt: skip
    parser.add_argument(
        "--readings-confirm-targets", action="store_true",
        help="print the make targets that run Table V's 3 readings nearest the paper's baseline with seeds 0-19",
    )  # fmt: skip
    parser.add_argument(
        "--tuned-overrides", nargs=2, metavar=("SET", "ARM"),
        help="print the overrides of the best trial of SET's (boston, ...) equal-budget search, ARM off or on",
    )  # fmt: skip
    parser.add_argument("--make-rows", action="store_true", help=f"write {MAKE_ROWS_FILE.name} (the paper rows)")
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's paper table")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder (runs/ inside)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <results>/tables)")
    parser.add_argument(
        "--force", action="store_true",
        help="replace a table even by one with fewer filled cells or sections (built from fewer runs)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.tuned_overrides:
        print(" ".join(best_overrides(args.results, *args.tuned_overrides)))
        return
    if args.adarem_confirm_targets or args.readings_confirm_targets:
        targets = adarem_confirm_targets if args.adarem_confirm_targets else readings_confirm_targets
        print(" ".join(targets(args.results)))
        return
    if args.make_rows or args.readme:
        if args.make_rows:
            MAKE_ROWS_FILE.write_text(make_rows())
            print(f"wrote {MAKE_ROWS_FILE}", file=sys.stderr)
        if args.readme:
            readme = ROOT / "README.md"
            readme.write_text(with_readme_table(readme.read_text()))
            print(f"wrote {readme}'s paper table", file=sys.stderr)
        if not args.tables:
            return
    unknown = [name for name in args.tables if name not in TABLES]
    if unknown or not args.tables:
        parser.error(f"unknown table {', '.join(unknown)}" if unknown else "name at least one table")
    out = args.out or args.results / "tables"
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/make_tables.py " + " ".join(args.tables)
    kept = []
    for name in args.tables:
        body, path = TABLES[name](args.results), out / f"{name}.md"
        if path.is_file() and not args.force and (reason := held_back(path.read_text(), body)):
            print(f"error: {path} not rewritten: {reason}", file=sys.stderr)
            kept.append(name)
            continue
        footer = f"\n\nGenerated {build_date()} by `{command}` from results/runs/.\n"
        path.write_text(body + footer)
        print(f"wrote {path}", file=sys.stderr)
    if kept:
        print(f"(`python scripts/make_tables.py --force {' '.join(kept)}` replaces them anyway)", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
