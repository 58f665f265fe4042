"""Printing a `core.run_bench` result: a rich table, JSON, markdown, a bar chart of the ratio to the floor, and
the targets read from a run (``targets``; docs/how-to/pick-a-backend.md)."""
from __future__ import annotations

import json
import math

BELOW_FLOOR = "below floor: floor wrong"
MODE_TITLES = {"eager": "eager (default forward)", "fast_inference": "fast_inference", "compiled": "compiled"}


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


def maps_bytes(row) -> int:
    """A bound on the pooled maps a block keeps beside its full-size tensors: 8 x N x (C + H x W) float32
    values (channel mean and max, the MLP's hidden and gate, the spatial mean, max, conv, BN and gate)."""
    n, h, w, c = row["shape_nhwc"]
    return 8 * n * (c + h * w) * 4


def full_size_temporaries(row) -> float | None:
    """The peak extra memory in full-size tensors, beyond the pooled maps (``maps_bytes``): what the memory
    target counts, so that CBAM's x*Mc reads 1.0 and not 1.0 plus its maps."""
    extra = extra_bytes(row)
    return None if extra is None else max(0, extra - maps_bytes(row)) / _tensor_bytes(row)


def floor_text(row) -> str:
    """The ratio to the floor as a report shows it: ``1.23x``, the below-floor flag, or why there is none."""
    if row.get("below_floor"):
        return BELOW_FLOOR
    if row.get("ratio_floor") is None:
        return "no floor" if row.get("floor_note") else "-"
    return f"{row['ratio_floor']:.2f}x"


def noise_text(row) -> str:
    """``noisy (IQR 45 % of the median)`` for a flagged case, else empty."""
    if not row.get("noisy"):
        return ""
    return f"noisy (IQR {100 * row['iqr_s'] / row['median_s']:.0f} % of the median)"


def to_json(result: dict) -> str:
    return json.dumps(result, indent=1)


def print_table(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=200)
    meta = result["meta"]
    table = Table(title="attnport bench: median time, ratio to the bandwidth floor and to the matching peer "
                        f"(float32, CPU, {meta['warmup']} warm-up calls, {meta['repeats']} timed rounds)")
    for col in ("module", "size", "backend", "mode", "layout", "median ms", "IQR ms", "first call s", "x floor",
                "peer", "x peer", "peak extra MiB"):
        table.add_column(col, justify="right" if col.endswith(("ms", "s", "floor", "x peer", "MiB")) else "left")
    for r in result["rows"]:
        backend = f"[dim]{r['backend']} (peer)[/]" if r["is_peer"] else r["backend"]
        if r["error"]:
            table.add_row(r["module"], r["size"], backend, r["mode"], r["layout"], f"[red]{r['error']}[/]",
                          *["-"] * 6)
            continue
        iqr = f"[red]{_ms(r['iqr_s'])} noisy[/]" if r["noisy"] else _ms(r["iqr_s"])
        floor = f"[red]{BELOW_FLOOR}[/]" if r["below_floor"] else floor_text(r)
        table.add_row(r["module"], r["size"], backend, r["mode"], r["layout"], _ms(r["median_s"]), iqr,
                      f"{r['compile_s']:.3g}", floor, r["peer"] or "-", _ratio(r["ratio_peer"]), _mb(extra_bytes(r)))
    console.print(table)
    bw = meta["bandwidth"]
    kernels = Table(title="bandwidth kernels (the floor uses the fastest; a copy moves 2x its buffer, a sum 1x)")
    for col in ("kernel", "process", "threads", "MB moved per call", "median ms", "GB/s"):
        kernels.add_column(col, justify="left" if col in ("kernel", "process") else "right")
    for k in bw["kernels"]:
        best = k["name"] == bw["best"] and k["process"] == bw["best_process"]
        kernels.add_row(k["name"] + (" (best)" if best else ""), k["process"], str(k["threads"]),
                        f"{k['bytes_moved'] / 1e6:.0f}", _ms(k["median_s"]), f"{k['bytes_per_s'] / 1e9:.1f}")
    console.print(kernels)
    floors = sorted({(r["size"], r["kind"], r["floor_s"], r["floor_note"]) for r in result["rows"]})
    console.print(f"floor = passes x tensor bytes / {bw['bytes_per_s'] / 1e9:.1f} GB/s, passes {meta['passes']}: "
                  + ", ".join(f"{s} {k} {f * 1e3:.3g} ms" + (" (no floor: fits in cache)" if note else "")
                              for s, k, f, note in floors))
    console.print(f"threads: {meta['threads']}; processes: {meta['processes']}")
    for note in sorted({r["floor_note"] for r in result["rows"] if r["floor_note"]}):
        console.print(note)
    notes = sorted({r["memory_note"] for r in result["rows"] if r["memory_note"]})
    if notes:
        console.print("peak extra memory: " + "; ".join(notes))
    for peer, why in meta.get("peers_skipped", {}).items():
        console.print(f"peer {peer} skipped: {why}")
    goals = targets(result)
    if goals:
        table = Table(title="targets, read from this run")
        for col in ("target", "scope", "worst case", "measured (worst)", "limit", "met", "compares, and why this limit"):
            table.add_column(col)
        for t in goals:
            table.add_row(t["target"], t["scope"], t["worst"], f"{t['measured']:.2f}", f"{t['limit']:g}",
                          _met(t, "[red]no[/]", "[red]floor wrong[/]"), t["why"])
        console.print(table)


def _met(t, no="no", wrong="floor wrong") -> str:
    return wrong if t["met"] is None else "yes" if t["met"] else no


def plot(result: dict, path) -> None:
    """A bar chart of time / floor: one panel per size x module, one bar per backend x mode x layout; the floor
    (black line) and the best-mode target (red dashes: 1.5 for SE/ECA, 2 for CBAM). A bar below the floor is
    drawn hatched and labelled as the floor's error; a size without a floor gets no panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["size"], r["module"]) for r in result["rows"]))
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(7 * ncols, 3.8 * nrows))
    colors = {"eager": "tab:blue", "fast_inference": "tab:green", "compiled": "tab:orange"}
    for ax, (size, module) in zip(axes.flat, panels):
        rows = [r for r in result["rows"] if (r["size"], r["module"]) == (size, module) and r["ratio_floor"]]
        ax.set_title(f"{module}, {size} {tuple(result['meta']['sizes'][size])} (N, H, W, C)", fontsize=9)
        if not rows:
            notes = {r["floor_note"] for r in result["rows"] if (r["size"], r["module"]) == (size, module)}
            ax.text(0.5, 0.5, "\n".join(filter(None, notes)) or "no timed case", ha="center", va="center",
                    fontsize=8, wrap=True, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        labels = [f"{r['backend']}{' (peer)' if r['is_peer'] else ''} {r['mode']} {r['layout']}" for r in rows]
        bars = ax.bar(range(len(rows)), [r["ratio_floor"] for r in rows],
                      color=["tab:gray" if r["is_peer"] else colors[r["mode"]] for r in rows])
        for bar, r in zip(bars, rows):
            if r["below_floor"]:
                bar.set_hatch("//")
                bar.set_edgecolor("tab:red")
                ax.annotate(BELOW_FLOOR, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=6, color="tab:red", rotation=90)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(2.0 if rows[0]["kind"] == "cbam" else 1.5, color="tab:red", linewidth=0.8, linestyle="--")
        ax.set_ylim(bottom=0)
        ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("time / floor")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("attnport bench: time / bandwidth floor (blue default forward, green fast_inference, orange "
                 "compiled, gray peers; red dashes: target)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _cell(row) -> str:
    if row is None:
        return "-"
    if row["median_s"] is None:
        return "failed" if row["error"] else "-"
    parts = [f"{row['ratio_floor']:.2f}x floor" if row["ratio_floor"] is not None and not row["below_floor"]
             else floor_text(row)]
    if row["ratio_peer"] is not None:
        parts.append(f"{row['ratio_peer']:.2f}x peer")
    if row["noisy"]:
        parts.append(noise_text(row))
    return f"{row['median_s'] * 1e3:.1f} ms ({', '.join(parts)})"


def markdown(result: dict, modules=None) -> str:
    """A markdown table, one line per module x backend x layout: each mode's median time, ratio to the floor and
    (paired) to the matching peer, flags, and the peak extra memory. docs/how-to/pick-a-backend.md tables.
    A mode a backend does not have is "n/a" (fast_inference is torch_impl's)."""
    rows = [r for r in result["rows"] if modules is None or r["module"] in modules]
    modes = [m for m in MODE_TITLES if m in result["meta"].get("modes", MODE_TITLES)]
    lines = [f"| module | size | backend | layout | {' | '.join(MODE_TITLES[m] for m in modes)} | peak extra MiB, "
             f"beyond input and output ({' / '.join(modes)}) |",
             "|---|---|---|---|" + "---|" * len(modes) + "---|"]
    for key in dict.fromkeys((r["module"], r["size"], r["backend"], r["layout"]) for r in rows):
        by_mode = {r["mode"]: r for r in rows if (r["module"], r["size"], r["backend"], r["layout"]) == key}
        first = next(iter(by_mode.values()))
        backend = f"{key[2]} (peer)" if first["is_peer"] else key[2]
        has = (lambda m: m != "fast_inference" or key[2] == "torch")
        cells = [_cell(by_mode.get(m)) if has(m) else "n/a" for m in modes]
        memory = " / ".join(_mb(extra_bytes(by_mode[m])) if m in by_mode else "-" if has(m) else "n/a"
                            for m in modes)
        lines.append(f"| {key[0]} | {key[1]} | {backend} | {key[3]} | {' | '.join(cells)} | {memory} |")
    return "\n".join(lines)


def bandwidth_markdown(result: dict) -> str:
    """The bandwidth kernels of a run: bytes moved per call, median time, bandwidth; the fastest sets the floor."""
    bw = result["meta"]["bandwidth"]
    lines = ["| kernel | process | threads | MB moved per call | median ms | GB/s |", "|---|---|---|---|---|---|"]
    for k in bw["kernels"]:
        best = k["name"] == bw["best"] and k["process"] == bw["best_process"]
        name = f"**{k['name']}** (best)" if best else k["name"]
        lines.append(f"| {name} | {k['process']} | {k['threads']} | {k['bytes_moved'] / 1e6:.0f} | "
                     f"{k['median_s'] * 1e3:.2f} | {k['bytes_per_s'] / 1e9:.1f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ targets
# Each target: what it compares, the rows it reads, the limit and why; read from a run, never asserted in tests.
_FAMILY = {"se": "SE/ECA", "eca": "SE/ECA", "cbam": "CBAM"}
PASSES = {"se": 3, "eca": 3, "cbam": 4}  # tensor passes a module must make (benchmarks/README.md "Floor")
FLOOR_LIMIT = {"SE/ECA": 1.5, "CBAM": 2.0}
WHY = {
    "forward": "our default forward against timm's module, same input, layout and mode, paired per round: both are "
               "the plain formulation, so ours must not cost more (5 %: what the pairing resolves on this machine)",
    "fast SE/ECA": "torch_impl's opt-in fast_inference against timm's eager module: the opt-in path must be at least "
                   "as fast as the peer's call (5 %: the pairing's resolution)",
    "fast CBAM": "fast_inference CBAM against timm's eager CbamModule: timm writes x*Mc as a full-size tensor and "
                 "reads it back twice; computed in cache blocks that round trip leaves memory (about 4 of timm's "
                 "7 tensor passes), hence 0.6",
    "floor": "the fastest mode of the backend (default forward, fast_inference, compiled) against the floor "
             "(bytes the module must move / the run's best streaming bandwidth); {limit}x leaves room for the "
             "work the floor does not count ({extra})",
    "compiled": "the compiled call against the same backend's eager call, same module, layout and size: compiling "
                "must not make a block slower (5 %: the pairing's resolution)",
    "memory": "peak memory a call allocates beyond its input, its output and its pooled maps (at most "
              "8 x N x (C + H x W) floats), in full-size tensors: SE/ECA need no "
              "full-size temporary (<= 1/2), CBAM at most one (x*Mc)",
}
_FLOOR_EXTRA = {"SE/ECA": "the first write of a fresh output, the pooled MLP",
                "CBAM": "two reductions over x*Mc and a 7x7 conv over the spatial map"}


def _where(r) -> str:
    return f"{r['module']} {r['size']} {r['mode']} {r['layout']}"


def targets(result: dict) -> list[dict]:
    """One line per target and scope: the measured worst case (and where), the limit, whether it is met, and
    what the target compares and why that limit (``WHY``).

    - torch default forward / timm's (paired), every family: <= 1.05;
    - torch fast_inference / timm's eager (paired): <= 1.05 for SE/ECA, <= 0.6 for CBAM (when it exists);
    - the best mode of each backend at size large: time / floor <= 1.5 (SE/ECA), <= 2 (CBAM); ``met`` is
      None (floor wrong) when a row of the scope is below the floor;
    - compiled / eager median time of the same backend, module, layout and size <= 1.05;
    - peak extra memory (beyond input and output, ``extra_bytes``): <= 1/2 tensor (SE/ECA), <= 1 tensor (CBAM).
    """
    rows = [r for r in result["rows"] if not r["is_peer"] and r["median_s"]]
    out = []

    def add(target, scope, pairs, limit, why, wrong=False):
        if pairs:
            worst, where = max(pairs, key=lambda p: p[0])
            met = None if wrong else worst <= limit
            out.append({"target": target, "scope": scope, "measured": worst, "worst": where, "limit": limit,
                        "met": met, "why": why})

    torch = [r for r in rows if r["backend"] == "torch" and r["ratio_peer"] is not None]
    for kind in ("SE/ECA", "CBAM"):
        add(f"torch default forward / timm's, {kind}", "every module, layout, size",
            [(r["ratio_peer"], _where(r)) for r in torch if r["mode"] == "eager" and _FAMILY[r["kind"]] == kind],
            1.05, WHY["forward"])
    for kind, limit in (("SE/ECA", 1.05), ("CBAM", 0.6)):
        add(f"torch fast_inference / timm's eager, {kind}", "every module, layout, size",
            [(r["ratio_peer"], _where(r)) for r in torch
             if r["mode"] == "fast_inference" and _FAMILY[r["kind"]] == kind],
            limit, WHY["fast SE/ECA" if kind == "SE/ECA" else "fast CBAM"])
    for backend in dict.fromkeys(r["backend"] for r in rows):
        for kind, limit in FLOOR_LIMIT.items():
            best, wrong = {}, False
            for r in rows:
                if r["backend"] == backend and r["size"] == "large" and _FAMILY[r["kind"]] == kind:
                    wrong |= bool(r["below_floor"])
                    if r["ratio_floor"] is not None and r["ratio_floor"] < best.get(r["module"], (math.inf,))[0]:
                        best[r["module"]] = (r["ratio_floor"], _where(r))
            add(f"{backend} best mode / floor, {kind}", "size large, worst module", list(best.values()), limit,
                WHY["floor"].format(limit=f"{limit:g}", extra=_FLOOR_EXTRA[kind]), wrong=wrong)
        pairs = []
        for r in rows:
            if r["backend"] == backend and r["mode"] == "compiled":
                pairs += [(r["median_s"] / e["median_s"], _where(r)) for e in rows if e["mode"] == "eager" and all(
                    e[k] == r[k] for k in ("backend", "module", "size", "layout"))]
        add(f"{backend} compiled / eager", "every module, layout, size", pairs, 1.05, WHY["compiled"])
    for kind, limit in (("SE/ECA", 0.5), ("CBAM", 1.0)):
        add(f"peak extra memory, in full-size tensors, {kind}", "measured cases",
            [(full_size_temporaries(r), _where(r)) for r in rows
             if extra_bytes(r) is not None and _FAMILY[r["kind"]] == kind], limit, WHY["memory"])
    return out


def targets_markdown(result: dict) -> str:
    lines = ["| target | scope | worst case | measured (worst) | limit | met |", "|---|---|---|---|---|---|"]
    for t in targets(result):
        met = _met(t, "**no**", "**floor wrong**")
        lines.append(f"| {t['target']} | {t['scope']} | {t['worst']} | {t['measured']:.2f} | {t['limit']:g} | {met} |")
    return "\n".join(lines)


TARGET_NOTES = (
    ("torch default forward / timm's", "<= 1.05, every family", WHY["forward"]),
    ("torch fast_inference / timm's eager", "SE/ECA <= 1.05, CBAM <= 0.6", WHY["fast SE/ECA"] + "; " + WHY["fast CBAM"]),
    ("best mode / floor", "each backend at size large: SE/ECA <= 1.5, CBAM <= 2",
     WHY["floor"].format(limit="1.5 / 2", extra="SE/ECA: " + _FLOOR_EXTRA["SE/ECA"] + "; CBAM: " + _FLOOR_EXTRA["CBAM"])),
    ("compiled / eager", "<= 1.05, each backend", WHY["compiled"]),
    ("peak extra memory", "SE/ECA <= 1/2 tensor, CBAM <= 1 tensor", WHY["memory"]),
)


def targets_explained() -> str:
    """A markdown list: each target, its limits, what it compares and why that limit."""
    return "\n".join(f"- **{name}** ({limits}): {why}." for name, limits, why in TARGET_NOTES)
