"""The attnport command line: `attnport COMMAND` (also `python -m attnport COMMAND`); `build_parser` makes its
parser, `main` runs it (docs/reference/cli.md)."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict

from . import backends, cases


def _check(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from .check import run_check

    names = args.backend or list(backends.BACKENDS)
    # the progress bar goes to stderr, so that stdout carries the result alone (JSON, Markdown, the tables)
    from .check import NET_CHECK_DTYPES, NET_CHECK_MODELS

    nets = getattr(args, "nets", False)
    total = len(cases.SPECS) * len(args.dtype)
    if nets:
        total += len(NET_CHECK_MODELS) * len([d for d in args.dtype if d in NET_CHECK_DTYPES])
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("checking", total=total)
        rows = run_check(names, dtypes=args.dtype, progress=lambda: progress.advance(task), nets=nets)
    if args.json:
        print(json.dumps([{k: v for k, v in asdict(r).items() if k != "failures"} for r in rows], indent=1))
    elif args.markdown:
        print(_check_markdown(rows, args.dtype))
    elif args.verbose:
        _print_check_rows(rows, args.dtype)
    else:
        _print_check_summary(rows, args.dtype)
    failed = [r for r in rows if not r.passed]
    checked = [r for r in rows if r.note != "not installed"]
    if not (args.json or args.markdown):
        print(_check_verdict(checked, failed, args.dtype))
    return 1 if failed or not checked else 0


def _check_verdict(checked, failed, dtypes) -> str:
    """The last line of `attnport check`, on stdout."""
    where = f"{', '.join(dict.fromkeys(r.backend for r in checked))}; {', '.join(dtypes)}"
    if not checked:
        return "verdict: FAIL: nothing was checked (no backend is installed)"
    if failed:
        return f"verdict: FAIL: {len(failed)} of {len(checked)} cases failed ({where}); --verbose lists them"
    return f"verdict: pass: {len(checked)} cases within tolerance ({where})"


def _tolerance_line(dtypes) -> str:
    import reference

    tols = ", ".join(f"{d} {reference.tolerance(d).rtol:.3g}" for d in dtypes)
    return (f"tolerance |y - ref| <= atol + rtol*|ref|, rtol = atol: {tols}; between backends twice that; "
            "a network's logits: reference.network_tolerance (depth x that, atol scaled by max|logits|)")


def _print_check_summary(rows, dtypes) -> None:
    """Module family x backend x dtype, 80 columns: cases, worst error as a fraction of the tolerance."""
    from rich.console import Console
    from rich.table import Table

    from .check import summary

    console = Console(width=80) if not sys.stdout.isatty() else Console()
    table = Table(title="attnport check: each backend against the float64 oracle", title_justify="left")
    for col, justify in (("family", "left"), ("backend", "left"), ("dtype", "left"), ("cases", "right"),
                         ("err/tol", "right"), ("export", "left"), ("transfer", "left"), ("result", "left")):
        table.add_column(col, justify=justify)
    yes_no = {True: "exact", False: "[red]no[/]", None: "-"}
    ok = {True: "ok", False: "[red]no[/]", None: "-"}
    groups = summary(rows)
    for g in groups:
        if g["note"] == "not installed":
            table.add_row(g["family"], g["backend"], g["dtype"], "-", "-", "-", "-", "[yellow]not installed[/]")
            continue
        result = "[green]pass[/]" if g["passed"] == g["cases"] else f"[red]FAIL {g['cases'] - g['passed']}[/]"
        table.add_row(g["family"], g["backend"], g["dtype"], str(g["cases"]), f"{g['tol_fraction']:.3f}",
                      yes_no[g["roundtrip_exact"]], ok[g["transfer_ok"]], result)
    console.print(table)
    console.print("err/tol: the worst |y - ref| / (atol + rtol*|ref|) of the family's cases (1 is the limit); "
                  "export: the reference weights exported back bit for bit; transfer: every other backend's "
                  "native weights give its outputs. " + _tolerance_line(dtypes) + ". --verbose: every case.")
    for g in groups:
        for line in g["failed"]:
            console.print(f"[red]failed[/] {g['backend']} {g['dtype']} {line}")


def _print_check_rows(rows, dtypes) -> None:
    """Every case (``--verbose``), with a legend of the case ids."""
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    table = Table(title="attnport check: each case against the float64 oracle", title_justify="left")
    for col in ("case", "backend", "dtype", "max abs err", "max rel err", "err/tol", "round-trip exact",
                "transfer in", "result"):
        table.add_column(col)
    yes_no = {True: "yes", False: "[red]no[/]", None: "-"}
    for r in rows:
        if r.note == "not installed":
            table.add_row(r.module, r.backend, r.dtype, "-", "-", "-", "-", "-", "[yellow]not installed[/]")
            continue
        result = "[green]pass[/]" if r.passed else f"[red]FAIL[/] ({r.note})"
        table.add_row(r.module, r.backend, r.dtype, f"{r.max_abs:.2e}", f"{r.max_rel:.2e}", f"{r.tol_fraction:.3f}",
                      yes_no[r.roundtrip_exact], yes_no[r.transfer_ok], result)
    console.print(table)
    console.print(f"case: a preset call, or {cases.SPEC_ID_LEGEND}")
    console.print(_tolerance_line(dtypes))


def _check_markdown(rows, dtypes) -> str:
    """The `check` rows as a GitHub-flavoured Markdown table, plus the tolerance line."""
    import reference

    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    yes_no = {True: "yes", False: "no", None: "-"}
    lines = ["| module | backend | dtype | max abs err | max rel err | round-trip exact | transfer in | result |",
             "|---|---|---|---:|---:|---|---|---|"]
    for r in rows:
        if r.note == "not installed":
            values = (r.module, r.backend, r.dtype, "-", "-", "-", "-", "not installed")
        else:
            values = (r.module, r.backend, r.dtype, f"{r.max_abs:.2e}", f"{r.max_rel:.2e}",
                      yes_no[r.roundtrip_exact], yes_no[r.transfer_ok],
                      "pass" if r.passed else f"**FAIL** ({r.note})")
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    tols = ", ".join(f"{d}: rtol=atol={reference.tolerance(d).rtol:.3g}" for d in dtypes)
    lines += ["", f"Tolerance (`|y - ref| <= atol + rtol*|ref|`): {tols}; between backends twice that."]
    return "\n".join(lines)


def _console():
    """stdout's console for the tables: the terminal's width, else $COLUMNS, else 160 columns."""
    import os

    from rich.console import Console

    return Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=160)


def _say(lines) -> None:
    """What was inferred from the keys, on stderr (stdout carries the result alone)."""
    for line in lines:
        print(f"attnport: {line}", file=sys.stderr)


def _titled(title: str, **kw):
    """A rich Table at least as wide as its title, so that the title never wraps (a narrow table would wrap it)."""
    from rich.table import Table

    return Table(title=title, min_width=len(title) + 4, **kw)


def _num(x) -> str:
    """A table's number: 3 significant digits in e-notation, "-" for none."""
    return "-" if x is None else f"{x:.2e}"


def _diff_json(result) -> int:
    """``diff --json``: the comparison on stdout, the verdict on stderr; exit 0 equal, 1 not."""
    print(json.dumps(result.to_json(), indent=1))
    print(result.verdict(), file=sys.stderr)
    return 0 if result.equal else 1


def _diff_table(result):
    """The module x tensor table of `attnport diff` (docs/how-to/convert-a-checkpoint.md "Comparing checkpoints")."""
    from rich.markup import escape

    table = _titled("attnport diff: B against A, module by module")
    for col in ("module", "tensor", "status", "shape A", "shape B", "dtype A", "dtype B", "max abs diff",
                "max rel diff", "bit-exact"):
        table.add_column(col, overflow="fold")
    style = {"ok": "[green]ok[/]", "differs": "[red]differs[/]", "shape mismatch": "[red]shape mismatch[/]",
             "missing": "[red]missing in B[/]", "unexpected": "[red]unexpected in B[/]"}


    for m in result.modules:
        where = escape(m.prefix or "(single module)")
        if not m.spec_match:
            table.add_row(where, "(spec)", "[red]spec mismatch[/]", escape(m.spec_a), escape(m.spec_b), "", "", "", "",
                          "no")
        for t in m.tensors:
            dtype_b = f"[red]{t.dtype_b}[/]" if t.dtype_differs else (t.dtype_b or "-")
            table.add_row(where, escape(t.name), style[t.status], str(tuple(t.shape_a)) if t.shape_a else "-",
                          str(tuple(t.shape_b)) if t.shape_b else "-", t.dtype_a or "-", dtype_b,
                          _num(t.max_abs), _num(t.max_rel), "yes" if t.bit_exact else "no")
    return table


def _diff(args) -> int:
    from .convert import NetworkFile
    from .diff import diff
    from .files import BadInput

    if args.model is not None:
        return _diff_networks(args)
    try:
        result = diff(args.a, args.b, layout_a=args.from_a, layout_b=args.from_b, atol=args.atol, rtol=args.rtol,
                      preset=_presets(args.preset), channels=_channels(args.channels))
    except NetworkFile as exc:
        raise BadInput(f"{exc}; attnport diff A B --model NAME (or auto) compares whole networks") from None
    _say(result.inferred)
    if args.json:
        return _diff_json(result)
    console = _console()
    for side, file, layout in (("A", result.a, result.layout_a), ("B", result.b, result.layout_b)):
        console.print(f"{side}: {file} ({layout} layout)", markup=False, highlight=False, soft_wrap=True)
    console.print(_diff_table(result))
    for side, file, keys in (("A", result.a, result.unrecognized_a), ("B", result.b, result.unrecognized_b)):
        if keys:
            console.print(f"{side}: {len(keys)} keys are not attention weights and were not compared "
                          f"(see `attnport inspect {file}`)", markup=False, highlight=False, soft_wrap=True)
    for line in result.problems():
        print(line)
    for line in result.warnings():
        print(f"warning: {line}")
    print(f"{result.verdict()}: {len(result.modules)} modules, {len(result.tensors())} tensors")
    return 0 if result.equal else 1


DIFF_SHOWN = 10  # diff --model: the compared tensors shown in the table and named on stdout, the largest first


def _network_diff_table(result):
    """`attnport diff --model`'s table: every missing, unexpected and mis-shaped tensor, then the `DIFF_SHOWN`
    compared tensors with the largest differences (docs/how-to/convert-a-checkpoint.md "Comparing checkpoints").
    A file's keys get a column where they are not the canonical names; a shape or dtype that differs shows
    as ``A / B``."""
    from rich.markup import escape

    from .netdiff import UNKNOWN

    rows = result.missing + result.unexpected + result.mismatched + result.compared[:DIFF_SHOWN]
    keyed = [side for side in ("a", "b") if any(getattr(t, f"key_{side}") not in (None, t.name) for t in rows)]
    table = _titled(f"attnport diff: B against A, tensor by tensor ({result.model_a})")
    for col in ("tensor", "status", *(f"key {side.upper()}" for side in keyed), "shape", "dtype", "max abs diff",
                "max rel diff", "bit-exact"):
        table.add_column(col, overflow="fold")
    style = {"ok": "[green]ok[/]", "differs": "[red]differs[/]", "shape mismatch": "[red]mis-shaped[/]",
             "missing": "[red]missing in B[/]", "unexpected": "[red]unexpected in B[/]"}

    def pair(a, b):
        a, b = ("-" if v is None else str(v) for v in (a, b))
        return escape(a) if a == b else f"{escape(a)} / [red]{escape(b)}[/]"

    def key(k, held):
        return "-" if k is None else escape(k) if held else f"[dim]({escape(k)})[/]"  # dim: where it would be

    for t in rows:
        keys = [key(getattr(t, f"key_{side}"), getattr(t, f"shape_{side}") is not None) for side in keyed]
        table.add_row(escape(t.name), style[t.status] + (" (key not known)" if t.kind == UNKNOWN else ""), *keys,
                      pair(*(None if v is None else tuple(v) for v in (t.shape_a, t.shape_b))),
                      pair(t.dtype_a, t.dtype_b), _num(t.max_abs), _num(t.max_rel), "yes" if t.bit_exact else "no")
    return table


def _diff_networks(args) -> int:
    """``diff --model``: two whole-network checkpoints, tensor by tensor (`attnport.netdiff.diff_networks`)."""
    from .netdiff import diff_networks

    _refuse_block_options(args)
    layout_a, layout_b = _network_layout(args.from_a, "--from-a"), _network_layout(args.from_b, "--from-b")
    result = diff_networks(args.a, args.b, args.model, layout_a, layout_b, atol=args.atol, rtol=args.rtol)
    _say(result.inferred)
    if args.json:
        return _diff_json(result)
    console = _console()
    for side, file, model, layout in (("A", result.a, result.model_a, result.layout_a),
                                      ("B", result.b, result.model_b, result.layout_b)):
        console.print(f"{side}: {file} ({model}, {layout} layout)", markup=False, highlight=False, soft_wrap=True)
    console.print(_network_diff_table(result))
    rest = result.compared[DIFF_SHOWN:]
    if rest:
        differ = sum(not t.equal for t in rest)
        console.print(f"... and {len(rest)} more compared tensors ({differ} differ), smaller differences; --json "
                      "lists every one", markup=False, highlight=False, soft_wrap=True)
    for line in result.notes:
        print(line)
    problems = result.problems()
    structural = len(problems) - len(result.differing)
    for line in problems[:structural + DIFF_SHOWN]:
        print(line)
    if len(result.differing) > DIFF_SHOWN:
        print(f"... and {len(result.differing) - DIFF_SHOWN} more tensors differ (--json lists them)")
    for line in result.warnings():
        print(f"warning: {line}")
    print(f"{result.verdict()}; {len(result.compared)} tensors compared")
    return 0 if result.equal else 1


# Library messages name the Python argument; the command line says its flag instead, once (the flags
# exist: tests/test_cli.py checks every one against the parser).
CLI_TERMS = (
    ("pass force=True to overwrite it", "pass --force to overwrite it", "--force"),
    ("(--preset PREFIX=NAME for one module; preset= in Python)", "(--preset PREFIX=NAME for one module)", "--preset"),
    ("pass modules={prefix: class name} and check_facts=False",
     "convert it to another layout (--to canonical keeps every spec)", "--to"),
    ("pass model=NAME (and layout=LAYOUT) to choose one", "pass --model NAME (and --from LAYOUT) to choose one",
     "--model"),
    ("pass layout=LAYOUT to choose one", "pass --from LAYOUT to choose one", "--from"),
    ("model='auto' reads k from the weights", "--model auto reads k from the weights", "--model"),
)


def cli_terms(message: str) -> str:
    """``message`` with each Python-side hint of `CLI_TERMS` replaced by the command line's flag."""
    for python, cli, _flag in CLI_TERMS:
        message = message.replace(python, cli)
    return message


def _user_errors():
    from . import checkpoint, files

    import reference

    return (files.BadInput, checkpoint.CheckpointError, reference.ParamError, FileExistsError, FileNotFoundError,
            IsADirectoryError, PermissionError, checkpoint.WriteError)


def _shown_specs(found) -> dict:
    """``{prefix: (text, preset call or None)}``: each module's spec as `attnport.tables.show_spec` names it,
    trying first the preset the module's network family was read with, then the layout's own."""
    from .tables import LAYOUT_PRESET, show_spec

    family_of = {p: f.preset for f, prefixes in found.families.items() for p in prefixes}
    out = {}
    for prefix, (spec, _) in found.bundle.items():
        prefer = [name for name in (family_of.get(prefix), LAYOUT_PRESET.get(found.layout)) if name]
        out[prefix] = show_spec(spec, prefer)
    return out


UNRECOGNIZED_SHOWN = 5  # inspect lists this many keys that are not attention weights (--all: every one)


def _inspect_tables(found, show_all: bool = False):
    """`attnport inspect`'s tables: the modules, and the keys that are not attention weights (or None): the
    first `UNRECOGNIZED_SHOWN` of them, every one with ``show_all``."""
    from rich.markup import escape

    table = _titled(f"attention modules ({found.layout} layout)")
    for col in ("prefix", "kind", "spec", "parameters"):
        table.add_column(col)
    shown = _shown_specs(found)
    for prefix, (spec, _) in found.bundle.items():
        table.add_row(escape(prefix or "(single module)"), spec.kind, escape(shown[prefix][0]), f"{spec.num_params():,}")
    if not found.unrecognized:
        return table, None
    count = len(found.unrecognized)
    listed = list(found.unrecognized.items()) if show_all else list(found.unrecognized.items())[:UNRECOGNIZED_SHOWN]
    title = f"{count} keys not recognized as attention weights"
    if len(listed) < count:
        title += f" (the first {len(listed)})"
    rest = _titled(title)
    for col in ("key", "shape", "dtype"):
        rest.add_column(col, overflow="fold")
    for key, value in listed:
        rest.add_row(escape(key), str(tuple(value.shape)), value.dtype.name)
    return table, rest


def _inspect(args) -> int:
    from .convert import NetworkFile, discover

    if args.model is not None:
        return _inspect_network(args)
    try:
        found = discover(args.file, args.layout, preset=_presets(args.preset), channels=_channels(args.channels),
                         keras_model=args.keras_model)
    except NetworkFile as net:  # a whole network attnport wrote: read it whole
        return _inspect_network(args, net.tensors, net.metadata)
    _say(found.inferences(args.file))
    if args.json:
        from .tables import shown_fields

        shown = _shown_specs(found)
        print(json.dumps({"layout": found.layout, "layout_inferred": found.layout_inferred,
                          "presets_inferred": [{"family": f.name, "preset": f.preset, "prefixes": prefixes}
                                               for f, prefixes in found.families.items()],
                          "modules": [{"prefix": p, "kind": spec.kind, "spec": shown[p][0], "preset": shown[p][1],
                                       "fields": _jsonable(shown_fields(spec)), "parameters": spec.num_params()}
                                      for p, (spec, _) in found.bundle.items()],
                          "unresolved": found.unresolved,
                          "unrecognized": {k: list(v.shape) for k, v in found.unrecognized.items()}}, indent=1))
        return 0
    console = _console()
    console.print(f"{args.file}: {len(found.bundle)} attention modules, {found.layout} layout", markup=False,
                  highlight=False, soft_wrap=True)
    table, rest = _inspect_tables(found, show_all=args.all)
    console.print(table)
    for prefix, why in found.unresolved.items():
        console.print(f"not converted {prefix or '(single module)'}: {cli_terms(why)}", markup=False, highlight=False,
                      style="yellow", soft_wrap=True)  # one line each, whatever the width: flags stay whole
    if rest is not None:
        console.print(rest)
        hidden = len(found.unrecognized) - rest.row_count
        if hidden:
            console.print(f"... and {hidden} more; --all lists all {len(found.unrecognized)} (--json too)",
                          markup=False, highlight=False, soft_wrap=True)
    return 0


def _jsonable(fields: dict) -> dict:
    """Spec fields for JSON: tuples (CBAM's spatial_order) as lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def _convert(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from .convert import convert, discover

    from .convert import NetworkFile

    if args.model is not None:
        return _convert_network(args)
    options = dict(preset=_presets(args.preset), channels=_channels(args.channels), keras_model=args.keras_model)
    try:
        found = discover(args.src, args.layout_from, **options)
    except NetworkFile as net:  # a whole network attnport wrote: convert it whole
        return _convert_network(args, net.tensors, net.metadata)
    _say(found.inferences(args.src))
    with Progress(console=Console(stderr=True), transient=True, disable=len(found.bundle) <= 4) as progress:
        task = progress.add_task("converting", total=len(found.bundle))
        summary, found, passed = convert(args.src, args.dst, args.to, layout=found.layout,
                                         keep_rest=args.keep_rest, force=args.force, found=found,
                                         progress=lambda n: progress.advance(task, n), **options)
    for prefix, why in found.unresolved.items():
        print(f"not converted: {prefix}: {cli_terms(why)}", file=sys.stderr)
    if found.unrecognized and not passed:
        print(f"{len(found.unrecognized)} keys of {args.src} are not attention weights and were not written "
              f"(see `attnport inspect`; --keep-rest passes them through between same-framework layouts)",
              file=sys.stderr)
    print(summary)
    return 0

# --- whole networks (--model; docs/how-to/convert-a-checkpoint.md "Whole networks") ---------------------
def _network_model(name: str) -> str:
    """``--model``: a name of reference.nets.ALL, or ``auto``."""
    from reference import nets

    from .netconvert import AUTO

    if name != AUTO and name not in nets.ALL:
        try:
            nets.get(name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}; or auto to detect it") from None
    return name


def _network_layout(layout: str | None, flag: str) -> str | None:
    from .files import BadInput
    from .netconvert import NETWORK_LAYOUTS

    if layout is not None and layout not in NETWORK_LAYOUTS:
        raise BadInput(f"{flag} {layout}: a whole network (--model) is read and written in "
                       f"{', '.join(NETWORK_LAYOUTS)}")
    return layout


def _refuse_block_options(args) -> None:
    """Options for attention modules alone mean nothing for a whole network: refused by flag."""
    from .files import BadInput

    given = [flag for flag, value in (("--preset", getattr(args, "preset", None)),
                                      ("--channels", getattr(args, "channels", None)),
                                      ("--keras-model", getattr(args, "keras_model", None)),
                                      ("--keep-rest", getattr(args, "keep_rest", False))) if value]
    if given:
        raise BadInput(f"{', '.join(given)}: for attention modules alone; a whole network (--model, or a file "
                       "attnport wrote whole) maps every tensor, with the network's facts")


def _read_network(args, path, layout, tensors, metadata):
    """``(tensors, Resolved)`` of the network in ``path``; what was inferred goes to stderr."""
    from .netconvert import read_network_file, resolve_file

    _refuse_block_options(args)
    layout = _network_layout(layout, "--from")
    if tensors is None:
        tensors, metadata, layout = read_network_file(path, args.model, layout)
    resolved = resolve_file(path, tensors, metadata, args.model, layout)
    _say([f"{path}: {resolved.why}"])
    return tensors, resolved


def _inspect_network(args, tensors=None, metadata=None) -> int:
    """Every tensor of a whole network and where it goes: counts by kind, ``--all`` every row, ``--json`` all."""
    from rich.markup import escape

    from .netconvert import plan

    tensors, resolved = _read_network(args, args.file, args.layout, tensors, metadata)
    spec, layout = resolved.spec, resolved.layout
    report = plan(spec, tensors, layout, None)
    if args.json:
        import dataclasses

        print(json.dumps({"network": spec.name, "layout": layout, "inferred": resolved.why,
                          "spec": _jsonable({f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}),
                          "parameters": spec.num_params(), **report.to_json()}, indent=1))
        return 0
    console = _console()
    buffers = sum(r.canonical is None for r in report.rows)
    console.print(f"{args.file}: {spec.name}, {layout} layout: {len(report.rows)} tensors, every one mapped "
                  f"({len(report.rows) - buffers} canonical parameters, {buffers} BatchNorm counters)",
                  markup=False, highlight=False, soft_wrap=True)
    counts = _titled(f"{spec.name} ({layout} layout): tensors by kind")
    for col, justify in (("kind", "left"), ("tensors", "right"), ("numbers", "right")):
        counts.add_column(col, justify=justify)
    for kind, (n, numbers) in report.counts().items():
        counts.add_row(kind, f"{n:,}", f"{numbers:,}")
    console.print(counts)
    if args.all:
        rows = _titled(f"every tensor of {args.file} and its canonical parameter")
        for col in ("key", "shape", "dtype", "canonical", "kind"):
            rows.add_column(col, overflow="fold")
        for r in report.rows:
            rows.add_row(escape(r.src), str(r.src_shape), r.dtype, escape(r.canonical or r.note), r.kind)
        console.print(rows)
    else:
        console.print("--all lists every tensor and its canonical parameter (--json too)", markup=False,
                      highlight=False, soft_wrap=True)
    return 0


def _convert_network(args, tensors=None, metadata=None) -> int:
    """Every tensor of a whole network from SRC's layout to ``--to``'s, written to DST."""
    from .netconvert import KERAS_WEIGHTS, convert_network_file, difference_lines

    to = _network_layout(args.to, "--to")
    tensors, resolved = _read_network(args, args.src, args.layout_from, tensors, metadata)

    def announce(report):  # before anything is written
        _say(difference_lines(report))
        _say(f"{args.src}: {note}" for note in report.notes)

    summary, report = convert_network_file(tensors, resolved.spec, resolved.layout, to, args.dst, force=args.force,
                                           announce=announce)
    what = "Keras weights (model.load_weights)" if summary.path.endswith(KERAS_WEIGHTS) else "tensors"
    changed = (f" -- NOT the same function as {report.model}: {', '.join(f for f, *_ in report.differences)} "
               "differ (above)") if report.differences else ""
    print(f"wrote {report.target or resolved.spec.name}, {to} layout: {summary.tensors:,} {what}, "
          f"{summary.bytes:,} bytes, {'/'.join(summary.dtypes)} to {summary.path}{changed}")
    return 0


def _pairs(values, convert, flag: str):
    """``["7"]`` -> one value for every module; ``["a.b=7", "c=8"]`` -> ``{prefix: value}``; None for none.

    Each value goes through ``convert``. A bare value together with pairs, two bare values, or one
    prefix twice is `BadInput` naming ``flag``.
    """
    from .files import BadInput

    if not values:
        return None
    bare = [v for v in values if "=" not in v]
    pairs = [tuple(v.split("=", 1)) for v in values if "=" in v]
    if bare and pairs:
        raise BadInput(f"{flag}: give one bare value for every module, or only PREFIX=VALUE pairs, not both "
                       f"(got {bare[0]!r} and {'='.join(pairs[0])!r})")
    if len(bare) > 1:
        raise BadInput(f"{flag}: given {len(bare)} bare values ({', '.join(map(repr, bare))}); give one, "
                       "or PREFIX=VALUE pairs")
    out = {}
    for prefix, value in pairs:
        if prefix in out:
            raise BadInput(f"{flag}: prefix {prefix!r} given twice")
        out[prefix] = convert(value)
    return convert(bare[0]) if bare else out


def _presets(values):
    """``--preset``: names from `reference.peers.preset_names`."""
    from reference.peers import preset_names

    from .files import BadInput

    def name(v: str) -> str:
        if v not in preset_names():
            raise BadInput(f"--preset: unknown preset {v!r}; choose one of {', '.join(preset_names())}")
        return v

    return _pairs(values, name, "--preset")


MAX_CHANNELS = 2**31 - 1


def _channels(values):
    """``--channels``: a positive channel count in ASCII digits."""
    import re

    from .files import BadInput

    def count(v: str) -> int:
        if not re.fullmatch(r"[0-9]{1,10}", v) or not 0 < int(v) <= MAX_CHANNELS:
            raise BadInput(f"--channels needs a positive integer C (at most {MAX_CHANNELS}), got {v!r}")
        return int(v)

    return _pairs(values, count, "--channels")


def _architecture(name: str) -> str:
    """``--keras-model``: a keras.applications architecture's name (``EfficientNetB0``), never an attribute such
    as ``__class__`` or a submodule (``efficientnet``)."""
    import re

    if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", name):
        raise argparse.ArgumentTypeError(f"{name!r} is not a keras.applications architecture name "
                                         "(e.g. EfficientNetB0, MobileNetV3Small)")
    return name


def _add_discovery_options(parser, keras_model: bool = True, scope: str = "") -> None:
    from reference.peers import preset_names

    parser.add_argument("--preset", action="append", metavar="[PREFIX=]NAME",
                        help="facts for peer classes whose keys do not fix them (e.g. timm SqueezeExcite: "
                             f"efficientnet or mobilenetv3; inferred where the other keys identify the network): "
                             f"one of {', '.join(preset_names())}, or PREFIX=NAME (repeatable){scope}")
    parser.add_argument("--channels", action="append", metavar="[PREFIX=]C",
                        help="C for ECA modules (their weight does not hold it): C, or PREFIX=C (repeatable)"
                             f"{scope}")
    if keras_model:
        parser.add_argument("--keras-model", metavar="ARCHITECTURE", type=_architecture,
                            help="the keras.applications architecture a .weights.h5 belongs to "
                                 "(e.g. EfficientNetB0)")


def _load_factory(target: str):
    """``path/to/file.py:factory`` -> the object ``factory()`` returns. Runs the user's own file; what goes
    wrong there (an exception, ``sys.exit``, a None result) is `BadInput` naming the file and factory."""
    import importlib.util
    import pathlib

    from .files import BadInput

    def run_user_code(what: str, fn, *args):
        """``fn(*args)`` from the user's file; its exception or ``sys.exit`` becomes `BadInput` naming ``what``."""
        try:
            return fn(*args)
        except SystemExit as exc:
            raise BadInput(f"{what} called sys.exit({exc.code!r})") from None
        except Exception as exc:  # noqa: BLE001 - the user's code: say what it raised
            raise BadInput(f"{what} raised {type(exc).__name__}: {exc}") from None

    path, _, name = target.rpartition(":")
    if not path or not name:
        raise BadInput(f"{target!r}: expected PATH.py:FACTORY")
    file = pathlib.Path(path)
    if not file.exists():
        raise BadInput(f"{file}: no such file")
    if not file.is_file():
        raise BadInput(f"{file}: not a regular file (expected PATH.py:FACTORY)")
    module_spec = importlib.util.spec_from_file_location(f"attnport_user_{file.stem}", file)
    if module_spec is None:
        raise BadInput(f"{file}: not a Python file (expected PATH.py:FACTORY)")
    module = importlib.util.module_from_spec(module_spec)
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # leave no __pycache__ beside the user's file
    try:
        run_user_code(f"running {file}", module_spec.loader.exec_module, module)
    finally:
        sys.dont_write_bytecode = dont_write
    factory = getattr(module, name, None)
    if not callable(factory):
        raise BadInput(f"{file} has no callable {name!r}")
    candidate = run_user_code(f"{file}:{name}()", factory)
    if candidate is None:
        raise BadInput(f"{file}:{name}() returned None; expected a torch nn.Module, a Keras layer, a Flax NNX "
                       "module or a callable f(x, params)")
    return candidate


def _verify_spec(args):
    """The spec ``verify`` checks against: ``--spec`` (a block) or ``--model`` (a whole network, with
    ``--num-classes``); `BadInput` naming the flag otherwise."""
    from .files import BadInput
    from .specparse import parse_spec

    if (args.spec is None) == (args.model is None):
        raise BadInput("verify needs exactly one of --spec SPEC (a block) or --model NAME (a whole network)")
    if args.spec is not None:
        if args.tap or args.check_training or args.num_classes is not None:
            raise BadInput("--tap, --check-training and --num-classes apply to --model (a whole network) only")
        return parse_spec(args.spec)
    import reference

    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    try:
        return reference.nets.get(args.model, **overrides)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"--model: {exc}") from None


def _taps(values) -> dict:
    """``--tap STAGE=MODULE`` (repeatable) -> ``{stage: module name}``."""
    from .files import BadInput

    out = {}
    for v in values or ():
        stage, sep, name = v.partition("=")
        if not sep or not stage or not name:
            raise BadInput(f"--tap needs STAGE=MODULE (e.g. layer2.0=backbone.stage2.0), got {v!r}")
        out[stage] = name
    return out


def _stage_table(report, title):
    """The per-stage table of a whole-network verify, the first divergence highlighted."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for col in ("stage", "read at", "max abs err", "max rel err", "atol", "result"):
        table.add_column(col)


    net = report.network
    for r in net.stages:
        first = r.stage == net.first_divergence
        if r.passed is None:
            result = "[dim]not read[/]"
        elif r.passed:
            result = "[green]pass[/]"
        else:
            result = ("[bold red]FIRST DIVERGENCE[/]" if first else "[red]FAIL[/]") + (
                f" {escape(r.error)}" if r.error else "")
        table.add_row(escape(r.stage), escape(r.tap or "-"), _num(r.max_abs), _num(r.max_rel), _num(r.atol), result,
                      style="on dark_red" if first else None)
    return table


def _verify(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress
    from rich.table import Table

    import reference

    from .files import BadInput
    from .verification import BadCandidate, SpecTooLarge, check_size, verify

    try:
        spec = _verify_spec(args)
        taps = _taps(args.tap)
        if taps:
            known = {s.name for s in reference.nets.stages(spec)} - {"head"}
            unknown = sorted(set(taps) - known)
            if unknown:
                raise BadInput(f"--tap: {', '.join(unknown)} is not a stage of {args.model} (stages: stem and "
                               f"the block paths, e.g. {sorted(known - {'stem'})[0]})")
        check_size(spec)  # before the user's file runs or anything is allocated
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    candidate = _load_factory(args.target)
    network = reference.nets.is_network(spec)
    steps = {"weights": "mapping the weights", "battery": "running the battery", "stages": "comparing every stage",
             "diagnosis": "diagnosing", "training": "training-mode forwards"}
    options = dict(taps=taps or None, check_training=args.check_training) if network else {}
    try:
        with Progress(transient=True, console=Console(stderr=True), disable=args.json) as bar:
            task = bar.add_task("verify", total=len(steps) - (not args.check_training))

            def progress(step):
                bar.update(task, description=steps.get(step, step), completed=list(steps).index(step))
            report = verify(candidate, spec, data_format=args.data_format, progress=progress, **options)
    except (BadCandidate, SpecTooLarge) as exc:
        raise BadInput(f"{args.target}: {exc}") from None
    if args.json:
        print(report.to_json())
        return 0 if report.passed else 1
    console = Console() if sys.stdout.isatty() else Console(width=160)
    title = f"attnport verify {escape(args.target)} against {escape(args.model or repr(spec))}"
    if network and report.network is not None:
        console.print(_stage_table(report, title))
    else:
        table = Table(title=title)
        for col in ("input", "format", "max abs err", "max rel err", "result"):
            table.add_column(col)

        for case in report.cases:
            error = " " + escape(case.error) if case.error else ""
            result = "[green]pass[/]" if case.passed else f"[red]FAIL[/]{error}"
            table.add_row(case.name, case.data_format, _num(case.max_abs), _num(case.max_rel), result)
        console.print(table)
    if report.passed:
        console.print("verdict: pass")
        if report.unmapped:
            console.print("unmapped variables (no canonical parameter maps to them):")
        for u in report.unmapped:
            console.print(f"  {u.name} {list(u.shape)}: {u.verdict}", markup=False)
        return 0
    if network and report.network is not None and report.network.first_divergence:
        console.print(f"first divergence: {report.network.first_divergence}", markup=False)
    text = report.to_markdown()
    for section in ("Canonical parameters no variable fits", "Diagnosis", "Unmapped variables", "Notes"):
        if f"\n## {section}\n" in text:
            console.print(f"## {section}" + text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0],
                          markup=False)
    line = report.network.explanation_line() if network and report.network is not None else None
    if line:
        console.print(line, markup=False)
    return 1


DESCRIPTION = ("Cross-check, inspect, convert, compare, verify and time SE, ECA and CBAM attention modules "
               "and their weights. Also runs as: python -m attnport COMMAND. Exit codes: 0 ok, 1 a failed check "
               "or a difference, 2 bad input, 130 interrupted.")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: every subcommand and option, each with its help text."""
    from . import __version__
    from .convert import FILE_LAYOUTS
    from .netconvert import NETWORK_LAYOUTS

    layouts, net_layouts = ", ".join(FILE_LAYOUTS), ", ".join(NETWORK_LAYOUTS)
    model_help = ("a whole network of reference.nets (e.g. seresnet50, eca_resnet50; docs: Whole networks), or auto "
                  "to detect it from the keys and shapes: every tensor is mapped, strictly (default: attention "
                  "modules alone, unless the file is a whole network attnport wrote)")
    parser = argparse.ArgumentParser(prog="attnport", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"attnport {__version__}",
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below; attnport COMMAND --help lists its options")

    def command(name: str, help: str, description: str = ""):
        return sub.add_parser(name, help=help, description=f"{help[0].upper()}{help[1:]}. {description}".strip())

    from .check import NET_CHECK_DTYPES, NET_CHECK_MODELS

    check = command("check", "cross-check every module in every installed backend",
                    "Exit 0 when every case is within the tolerance, 1 when one is not or nothing was checked.")
    check.add_argument("--backend", action="append", choices=sorted(backends.BACKENDS),
                       help="limit to this backend (repeatable); default: all")
    check.add_argument("--dtype", action="append", choices=(*cases.DTYPES, "all"), default=None,
                       help="dtype to check (repeatable, or 'all'); default: float32, which keeps the default "
                            "run under a minute on 2 cores")
    check.add_argument("--nets", action="store_true",
                       help=f"also check one whole network per family ({', '.join(NET_CHECK_MODELS)}) in "
                            f"{'/'.join(NET_CHECK_DTYPES)} among --dtype; about 30 s more on 2 cores")
    out = check.add_mutually_exclusive_group()
    out.add_argument("--verbose", action="store_true", help="print every case instead of the summary per family")
    out.add_argument("--json", action="store_true", help="print every case as JSON instead of a table")
    out.add_argument("--markdown", action="store_true", help="print every case as a Markdown table")

    inspect = command("inspect", "list the attention modules a weight file holds, or every tensor of a whole network",
                      "Exit 0 ok, 2 bad input. What was inferred from the keys goes to stderr.")
    inspect.add_argument("file", metavar="FILE",
                         help="a .safetensors, torch .pt/.pth/.bin/.ckpt (weights only) or .h5 file")
    inspect.add_argument("--from", dest="layout", choices=FILE_LAYOUTS, metavar="LAYOUT",
                         help=f"the file's layout, one of {layouts} (default: what the file declares, else what "
                              f"its keys show); with --model one of {net_layouts}")
    inspect.add_argument("--json", action="store_true",
                         help="print the modules, what was inferred and every other key as JSON instead of tables "
                              "(with --model: every tensor and where it goes)")
    inspect.add_argument("--all", action="store_true",
                         help=f"list every key that is not an attention weight (default: the first "
                              f"{UNRECOGNIZED_SHOWN} and a count); with --model every tensor and its canonical "
                              "parameter (default: counts by kind)")
    inspect.add_argument("--model", metavar="NAME", type=_network_model, help=model_help)
    _add_discovery_options(inspect)
    conv = command("convert", "convert every recognized attention module, or every tensor of a whole network, to "
                              "another layout",
                   "Exit 0 ok, 1 the written file did not verify, 2 bad input.")
    conv.add_argument("src", metavar="SRC", help="the weight file to read (any file inspect reads)")
    conv.add_argument("dst", metavar="DST", help="the .safetensors file to write (with --model --to keras also a "
                                                 "Keras .weights.h5)")
    conv.add_argument("--from", dest="layout_from", choices=FILE_LAYOUTS, metavar="LAYOUT",
                      help=f"SRC's layout, one of {layouts} (default: what the file declares, else what its "
                           f"keys show); with --model one of {net_layouts}")
    conv.add_argument("--to", required=True, choices=FILE_LAYOUTS, metavar="LAYOUT",
                      help=f"the layout to write, one of {layouts}; with --model one of {net_layouts}")
    conv.add_argument("--model", metavar="NAME", type=_network_model, help=model_help)
    conv.add_argument("--keep-rest", action="store_true", help="copy non-attention keys between same-framework layouts")
    conv.add_argument("--force", action="store_true", help="overwrite DST")
    _add_discovery_options(conv)
    dif = command("diff", "compare the attention modules, or with --model every tensor of a whole network, of two "
                          "checkpoints, in any layouts",
                  "Exit 0 when every module and tensor matches within the tolerance, 1 otherwise (a difference, "
                  "or a module that could not be compared; with --model a tensor missing, unexpected or "
                  "mis-shaped), 2 for bad input (nothing to compare included).")
    dif.add_argument("a", metavar="A", help="the reference file")
    dif.add_argument("b", metavar="B", help="the file compared with it")
    dif.add_argument("--from-a", choices=FILE_LAYOUTS, metavar="LAYOUT",
                     help="A's layout (default: declared, else from its keys); with --model one of "
                          f"{net_layouts}")
    dif.add_argument("--from-b", choices=FILE_LAYOUTS, metavar="LAYOUT",
                     help="B's layout (default: declared, else from its keys); with --model one of "
                          f"{net_layouts}")
    dif.add_argument("--model", metavar="NAME", type=_network_model,
                     help="compare every tensor of a whole network of reference.nets (e.g. seresnet50; "
                          "num_classes read from each file), or auto to detect each file's network from its keys "
                          "and shapes; a file that is not exactly the network is read in the layout that fits it "
                          "best, and its missing, unexpected and mis-shaped tensors listed (default: attention "
                          "modules alone)")
    dif.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0: exact)")
    dif.add_argument("--rtol", type=float, default=0.0, help="tolerance relative to |A| (default 0: exact)")
    dif.add_argument("--json", action="store_true", help="print the comparison as JSON (with --model: every tensor)")
    _add_discovery_options(dif, keras_model=False, scope="; applies to both files")
    ver = command("verify", "check your own SE/ECA/CBAM block or whole network against the oracle and name the bug",
                  "Exit 0 pass, 1 fail, 2 bad input. A whole network (--model) is compared stage by stage; the "
                  "first stage that leaves the tolerance is located and its bug named.")
    ver.add_argument("target", metavar="PATH.py:FACTORY", help="a file and a function in it that returns your module")
    ver.add_argument("--spec", help='a block: what it should compute, e.g. "SE(channels=64, ratio=16)"')
    ver.add_argument("--model", metavar="NAME", help="a whole network: its name (docs/reference/networks.md lists "
                     "them, e.g. seresnet18, EfficientNetB0)")
    ver.add_argument("--num-classes", type=int, metavar="N", help="with --model: the classifier's classes "
                     "(default: the model's, 1000)")
    ver.add_argument("--tap", action="append", metavar="STAGE=MODULE",
                     help="with --model: read stage STAGE (stem or a block path such as layer2.0) at your "
                          "module MODULE's output, where its name differs (repeatable)")
    ver.add_argument("--check-training", action="store_true",
                     help="with --model: also run two training-mode forwards and check BatchNorm's momentum")
    ver.add_argument("--data-format", choices=("channels_last", "channels_first"), default=None,
                     help="the data format to feed your module (default: torch channels_first, NNX channels_last, "
                          "Keras its layer's data_format; a callable that takes data_format: both)")
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    from .bench.command import add_parser as add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return _dispatch(args)
        except KeyboardInterrupt as exc:  # Ctrl-C: the shell's convention, no traceback
            print(f"attnport: {exc}" if str(exc) else "attnport: interrupted", file=sys.stderr)
            return 130


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """attnport's own warnings (NaN/Inf weights) as one ``attnport: warning:`` line; others as Python shows them."""
    from .checkpoint import NonFiniteWarning

    if issubclass(category, NonFiniteWarning):
        print(f"attnport: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _dispatch(args) -> int:
    if args.command == "bench":
        return args.run(args)
    from .checkpoint import VerificationError

    try:
        if args.command == "check":
            args.dtype = list(cases.DTYPES) if "all" in (args.dtype or []) else (args.dtype or ["float32"])
            return _check(args)
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "diff":
            return _diff(args)
        if args.command == "verify":
            return _verify(args)
        return _convert(args)
    except VerificationError as exc:
        print(f"attnport: verification failed: {cli_terms(str(exc))}", file=sys.stderr)
        return 1
    except _user_errors() as exc:
        print(f"attnport: {cli_terms(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
