"""Printing a `bench.run_bench` result: a rich table, JSON, and a bar chart of the ratio to the floor."""
from __future__ import annotations

import json
import math


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3g}"


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.3g}x"


def _mb(nbytes) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.3g}"


def _tensor_bytes(row) -> int:
    n, h, w, c = row["shape_nhwc"]
    return n * h * w * c * 4  # float32


def extra_bytes(row) -> int | None:
    """Peak extra memory of a case: bytes allocated beyond the input and the output (float32, the input's
    shape). ``memory_bytes`` is what the framework's tool reports, the output included."""
    if row.get("memory_bytes") is None:
        return None
    return max(0, row["memory_bytes"] - _tensor_bytes(row))


def to_json(result: dict) -> str:
    return json.dumps(result, indent=1)


def print_table(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=200)
    meta = result["meta"]
    bw = meta["bandwidth"]
    table = Table(title="attnport bench: median time, ratio to the bandwidth floor and to the matching peer "
                        f"(float32, CPU, {meta['warmup']} warm-up + {meta['repeats']} timed calls)")
    for col in ("module", "size", "backend", "mode", "layout", "median ms", "IQR ms", "first call s", "x floor",
                "peer", "x peer", "peak extra MiB"):
        table.add_column(col, justify="right" if col.endswith(("ms", "s", "floor", "x peer", "MiB")) else "left")
    for r in result["rows"]:
        backend = f"[dim]{r['backend']} (peer)[/]" if r["is_peer"] else r["backend"]
        if r["error"]:
            table.add_row(r["module"], r["size"], backend, r["mode"], r["layout"], f"[red]{r['error']}[/]",
                          *["-"] * 6)
            continue
        table.add_row(r["module"], r["size"], backend, r["mode"], r["layout"], _ms(r["median_s"]), _ms(r["iqr_s"]),
                      f"{r['compile_s']:.3g}", _ratio(r["ratio_floor"]), r["peer"] or "-", _ratio(r["ratio_peer"]),
                      _mb(extra_bytes(r)))
    console.print(table)
    floors = sorted({(r["size"], r["kind"], r["floor_s"]) for r in result["rows"]})
    console.print(f"bandwidth: {bw['bytes_per_s'] / 1e9:.3g} GB/s (NumPy copy of {bw['tensor_bytes'] / 1e6:.3g} MB, "
                  f"tensor bytes per copy time, median of {bw['repeats']} rounds); floor = passes x tensor bytes / "
                  f"bandwidth, passes "
                  f"{meta['passes']}: " + ", ".join(f"{s} {k} {f * 1e3:.3g} ms" for s, k, f in floors))
    console.print(f"threads: {meta['threads']}")
    notes = sorted({r["memory_note"] for r in result["rows"] if r["memory_note"]})
    if notes:
        console.print("peak extra memory: " + "; ".join(notes))
    goals = targets(result)
    if goals:
        table = Table(title="issue 7's targets, read from this run")
        for col in ("target", "scope", "measured (worst)", "limit", "met"):
            table.add_column(col)
        for t in goals:
            table.add_row(t["target"], t["scope"], f"{t['measured']:.2f}", f"{t['limit']:g}",
                          "yes" if t["met"] else "[red]no[/]")
        console.print(table)


def plot(result: dict, path) -> None:
    """A bar chart of time / floor: one panel per size x module, one bar per backend x mode x layout; the floor
    (black line) and the best-mode target of issue 7 (red dashes: 1.5 for SE/ECA, 2 for CBAM)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["size"], r["module"]) for r in result["rows"]))
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(7 * ncols, 3.8 * nrows))
    for ax, (size, module) in zip(axes.flat, panels):
        rows = [r for r in result["rows"] if (r["size"], r["module"]) == (size, module) and r["ratio_floor"]]
        labels = [f"{r['backend']}{' (peer)' if r['is_peer'] else ''} {r['mode']} {r['layout']}" for r in rows]
        colors = ["tab:gray" if r["is_peer"] else "tab:blue" if r["mode"] == "eager" else "tab:orange" for r in rows]
        ax.bar(range(len(rows)), [r["ratio_floor"] for r in rows], color=colors)
        ax.axhline(1.0, color="black", linewidth=0.8)
        if rows:  # issue 7's best-mode target for the family (read at size large)
            ax.axhline(2.0 if rows[0]["kind"] == "cbam" else 1.5, color="tab:red", linewidth=0.8, linestyle="--")
        ax.set_ylim(bottom=0)
        ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("time / floor")
        ax.set_title(f"{module}, {size} {tuple(result['meta']['sizes'][size])} (N, H, W, C)", fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("attnport bench: time / bandwidth floor (blue eager, orange compiled, gray peers; "
                 "red dashes: target)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _cell(row) -> str:
    if row is None or row["median_s"] is None:
        return "-"
    peer = f", {row['ratio_peer']:.2f}x peer" if row["ratio_peer"] is not None else ""
    return f"{row['median_s'] * 1e3:.1f} ms ({row['ratio_floor']:.2f}x floor{peer})"


def markdown(result: dict, modules=None) -> str:
    """A markdown table, one line per module x backend x layout: eager and compiled median time, ratio to the
    floor and (paired) to the matching peer, and the peak extra memory. README's "Choosing a backend" table."""
    rows = [r for r in result["rows"] if modules is None or r["module"] in modules]
    lines = ["| module | size | backend | layout | eager | compiled | peak extra MiB, beyond input and output "
             "(eager / compiled) |",
             "|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["module"], r["size"], r["backend"], r["layout"]) for r in rows):
        by_mode = {r["mode"]: r for r in rows if (r["module"], r["size"], r["backend"], r["layout"]) == key}
        eager, compiled = by_mode.get("eager"), by_mode.get("compiled")
        backend = f"{key[2]} (peer)" if (eager or compiled)["is_peer"] else key[2]
        memory = " / ".join(_mb(extra_bytes(r)) if r else "-" for r in (eager, compiled))
        lines.append(f"| {key[0]} | {key[1]} | {backend} | {key[3]} | {_cell(eager)} | {_cell(compiled)} | {memory} |")
    return "\n".join(lines)


# Issue 7's targets, read from a run (never asserted in tests). Each: what, the rows it reads, the limit.
_FAMILY = {"se": "SE/ECA", "eca": "SE/ECA", "cbam": "CBAM"}


def targets(result: dict) -> list[dict]:
    """One line per target and scope: the measured worst case, the limit, and whether it is met.

    - torch eager SE/ECA: time / timm's (paired) <= 1.05; torch eager CBAM: <= 0.6 (every module, layout, size);
    - the best mode of each backend at size large: time / floor <= 1.5 (SE/ECA), <= 2 (CBAM);
    - compiled / eager median time of the same backend, module, layout and size <= 1.05;
    - peak extra memory (beyond input and output, `extra_bytes`): < 1/2 tensor (SE/ECA: no full-size temporary),
      <= 1 tensor (CBAM).
    """
    rows = [r for r in result["rows"] if not r["is_peer"] and r["median_s"]]
    out = []

    def add(target, scope, values, limit):
        if values:
            worst = max(values)
            out.append({"target": target, "scope": scope, "measured": worst, "limit": limit, "met": worst <= limit})

    for kind, limit in (("SE/ECA", 1.05), ("CBAM", 0.6)):
        add(f"torch eager time / timm's, {kind}", "every module, layout, size",
            [r["ratio_peer"] for r in rows if r["backend"] == "torch" and r["mode"] == "eager"
             and _FAMILY[r["kind"]] == kind and r["ratio_peer"] is not None], limit)
    for backend in dict.fromkeys(r["backend"] for r in rows):
        for kind, limit in (("SE/ECA", 1.5), ("CBAM", 2.0)):
            best = {}
            for r in rows:
                if r["backend"] == backend and r["size"] == "large" and _FAMILY[r["kind"]] == kind:
                    best[r["module"]] = min(best.get(r["module"], math.inf), r["ratio_floor"])
            add(f"{backend} best mode / floor, {kind}", "size large, worst module", list(best.values()), limit)
        pairs = []
        for r in rows:
            if r["backend"] == backend and r["mode"] == "compiled":
                eager = [e for e in rows if e["mode"] == "eager" and all(e[k] == r[k] for k in
                                                                        ("backend", "module", "size", "layout"))]
                pairs += [r["median_s"] / e["median_s"] for e in eager]
        add(f"{backend} compiled / eager", "every module, layout, size", pairs, 1.05)
    for kind, limit in (("SE/ECA", 0.5), ("CBAM", 1.0)):
        add(f"peak extra memory, in full-size tensors, {kind}", "measured cases",
            [extra_bytes(r) / _tensor_bytes(r) for r in rows
             if extra_bytes(r) is not None and _FAMILY[r["kind"]] == kind], limit)
    return out


def targets_markdown(result: dict) -> str:
    lines = ["| target | scope | measured (worst) | limit | met |", "|---|---|---|---|---|"]
    for t in targets(result):
        lines.append(f"| {t['target']} | {t['scope']} | {t['measured']:.2f} | {t['limit']:g} | "
                     f"{'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines)
