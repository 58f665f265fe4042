"""The attnport command line: ``attnport check`` (also ``python -m attnport check``)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from . import backends, cases


def _check(args) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    import reference

    from .check import run_check

    console = Console()
    names = args.backend or list(backends.BACKENDS)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("checking", total=len(cases.SPECS) * len(args.dtype))
        rows = run_check(names, dtypes=args.dtype, progress=lambda: progress.advance(task))
    if args.json:
        print(json.dumps([{k: v for k, v in asdict(r).items() if k != "failures"} for r in rows], indent=1))
    else:
        table = Table(title="attnport check: each backend against the float64 oracle")
        for col in ("module", "backend", "dtype", "max abs err", "max rel err", "round-trip exact",
                    "transfer in", "result"):
            table.add_column(col)
        yes_no = {True: "yes", False: "[red]no[/]", None: "-"}
        for r in rows:
            if r.note == "not installed":
                table.add_row(r.module, r.backend, r.dtype, "-", "-", "-", "-", "[yellow]not installed[/]")
                continue
            result = "[green]pass[/]" if r.passed else f"[red]FAIL[/] ({r.note})"
            table.add_row(r.module, r.backend, r.dtype, f"{r.max_abs:.2e}", f"{r.max_rel:.2e}",
                          yes_no[r.roundtrip_exact], yes_no[r.transfer_ok], result)
        console.print(table)
        tols = ", ".join(f"{d}: rtol=atol={reference.tolerance(d).rtol:.3g}" for d in args.dtype)
        console.print(f"tolerance (|y - ref| <= atol + rtol*|ref|): {tols}; between backends twice that")
    failed = [r for r in rows if not r.passed]
    checked = [r for r in rows if r.note != "not installed"]
    print(f"{len(checked) - len(failed)} passed, {len(failed)} failed", file=sys.stderr)
    return 1 if failed or not checked else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="attnport", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="cross-check every module in every installed backend")
    check.add_argument("--backend", action="append", choices=sorted(backends.BACKENDS),
                       help="limit to this backend (repeatable); default: all")
    check.add_argument("--dtype", action="append", choices=cases.DTYPES, default=None,
                       help="limit to this dtype (repeatable); default: float32 and float64")
    check.add_argument("--json", action="store_true", help="print rows as JSON instead of a table")
    args = parser.parse_args(argv)
    if args.command == "check":
        args.dtype = args.dtype or list(cases.DTYPES)
        return _check(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
