"""Rewrites the docs page "Pick a backend" (docs/how-to/pick-a-backend.md) and the generated tables of
"Benchmark method" (docs/explanation/benchmark-method.md) from the committed runs in ``benchmarks/results``.

    attnport bench --size large --repeats 25 --json --plot docs/assets/benchmarks/large.png > benchmarks/results/large.json
    THP_MEM_ALLOC_ENABLE=1 GLIBC_TUNABLES=glibc.malloc.hugetlb=1 attnport bench --size large --repeats 25 --json \\
        --plot docs/assets/benchmarks/large_hugepages.png > benchmarks/results/large_hugepages.json
    python -m attnport.bench.first_touch --json > benchmarks/results/first_touch.json     (and the same with the switches)
    python -m attnport.bench.cache_floor --json > benchmarks/results/cache_floor.json
    python -m attnport.bench.noise --json > benchmarks/results/noise_small.json          (and --size large)
    python -m attnport.bench.readme_section

The tables are generated (``tests/test_docs.py`` checks them against the JSON); the prose quotes numbers
read from the same runs. Re-read the prose after a new run: a conclusion can change with the numbers.
"""
from __future__ import annotations

import json
import pathlib
import re

from . import report

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
NOISE_RUNS = {"noise_small.json": "small, quiet machine", "noise_small_one_core_busy.json":
              "small, one core taken by a busy loop", "noise_large.json": "large, shared machine"}
# docs/explanation/benchmark-method.md: a generated block sits between "<!-- generated: NAME -->" and "<!-- end: NAME -->"
_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end: \2 -->)", re.S)


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def cache_floor_table(result: dict) -> str:
    """The copy bandwidth per tensor size (``cache_floor.run``) and whether a memory floor applies."""
    lines = ["| buffer | MB | kernel | back-to-back calls | GB/s (a copy counts 2 x its bytes) | memory floor |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['buffer']} | {r['bytes'] / 1e6:.1f} | {r['kernel']} | {r['calls_per_round']} | "
                     f"{r['gb_per_s']:.1f} | {'none: fits in the last-level cache' if r['floor_note'] else 'yes'} |")
    return "\n".join(lines)


def noise_table(runs: dict) -> str:
    """Per run of ``noise.run``: each worker's median, IQR / median and paired ratio to the torch-only worker."""
    lines = ["| run | rounds | worker | torch_impl SE: median µs, IQR / median, x torch-only | "
             "timm SE: median µs, IQR / median, x torch-only |", "|---|---|---|---|---|"]
    for title, result in runs.items():
        for kind, cases in result["all"].items():
            cells = [f"{c['median_us']:.0f}, {c['iqr_over_median']:.2f}, {c['ratio_to_torch']:.2f}x"
                     for c in cases.values()]
            lines.append(f"| {title} | {result['rounds']} | {kind} | {' | '.join(cells)} |")
    return "\n".join(lines)


def page_blocks() -> dict:
    """The generated blocks of the benchmark method page, by name."""
    return {"cache_floor": cache_floor_table(load("cache_floor.json")),
            "noise": noise_table({title: load(name) for name, title in NOISE_RUNS.items()}),
            "targets": report.targets_explained()}


def rewrite_blocks(text: str, blocks: dict) -> str:
    """``text`` with every generated block replaced by ``blocks[name]``; a block without a value is an error."""
    def put(m):
        return f"{m.group(1)}{blocks[m.group(2)]}\n{m.group(4)}"
    found = {m.group(2) for m in _BLOCK.finditer(text)}
    if found != set(blocks):
        raise ValueError(f"generated blocks in the page {sorted(found)} differ from {sorted(blocks)}")
    return _BLOCK.sub(put, text)


def _row(d, module, backend, mode, layout):
    for row in d["rows"]:
        if (row["module"], row["backend"], row["mode"], row["layout"]) == (module, backend, mode, layout):
            return row
    raise KeyError((module, backend, mode, layout))


def section() -> str:
    big, huge = load("large.json"), load("large_hugepages.json")
    ft, fth = load("first_touch.json")["median_ms"], load("first_touch_hugepages.json")["median_ms"]
    bw, v = big["meta"]["bandwidth"], big["meta"]["versions"]
    kernels = {k["name"]: k["bytes_per_s"] / 1e9 for k in bw["kernels"]}
    goals = report.targets(big)
    missed = [t for t in goals if t["met"] is not True]
    r = lambda d, *key: _row(d, *key)  # noqa: E731
    se_fast, se_eager = r(big, "SE", "torch", "fast_inference", "nchw"), r(big, "SE", "torch", "eager", "nchw")
    se_c = r(big, "SE", "torch", "compiled", "nchw")
    timm_se = r(big, "SE", "timm", "eager", "nchw")
    cbam_fast, timm_cbam = r(big, "CBAM", "torch", "fast_inference", "nchw"), r(big, "CBAM", "timm", "eager", "nchw")
    j = lambda d, m: r(d, m, "jax", "compiled", "nhwc")  # noqa: E731
    t = lambda d, m: r(d, m, "tf", "compiled", "nhwc")  # noqa: E731
    floors = {k: r(big, k, "torch", "eager", "nchw")["floor_s"] * 1e3 for k in ("SE", "CBAM")}
    return f'''# Pick a backend

## The benchmark: `attnport bench`

`attnport bench` (code in `attnport/bench/`, full method in [Benchmark method](../explanation/benchmark-method.md)) times every module (SE,
ECA, CBAM: the article defaults and the timm presets) in every installed backend and mode, beside the
peers and the memory-bandwidth floor, all in one run:

- **Modes:** `eager` is the default call (torch `module(x)`, Keras `layer(x, training=False)`, the NNX
  module op by op); `fast_inference` is torch_impl's opt-in CPU inference method (below; torch only);
  `compiled` is `torch.compile(fullgraph=True)`, `tf.function(jit_compile=True)`, `jax.jit`. torch runs
  NCHW and `channels_last`, TF and JAX NHWC. Ours and the peers are called through the same adapter
  (`attnport.backends.adapter`).
- **Floor:** the bytes a module must move (3 × the tensor for SE and ECA: read to pool, read and write to
  scale; 4 × for CBAM) divided by the best streaming bandwidth measured in the same run: the fastest of a
  NumPy copy (one thread), a NumPy sum (read only), torch `copy_` into a preallocated tensor and a torch
  sum (both at the bench's thread count), a copy counted as 2 × its buffer, on a buffer of 4 × the
  last-level cache. Each case's ratio is paired with the copy of its own round. A ratio below 1 cannot
  happen for a streaming formulation: the report says "below floor: floor wrong" instead of printing it.
  A tensor whose input and output fit in the last-level cache has no memory floor ("no floor"): on this
  machine tiny, small and medium ([Benchmark method](../explanation/benchmark-method.md#floor) has the copy bandwidth per size).
- **Method:** threads set explicitly and equally in every framework (`--threads`, default: the CPUs
  available); a first call (compile) timed apart, warm-up, then interleaved rounds, each timing every
  bandwidth kernel and every case once (as back-to-back calls for about 10 ms), so that a slow spell of a
  shared machine hits every case of a round alike. Median and IQR; a case whose IQR exceeds 30 % of its
  median is flagged "noisy". Every framework runs in the one process: with TensorFlow's and JAX's thread
  pools loaded beside torch, torch's times did not move (`python -m attnport.bench.noise`,
  [Benchmark method](../explanation/benchmark-method.md#noise)); `--isolate` times each framework in a process of its own.
- **Peers**, each compared only with rows of its own framework: timm `SEModule`/`EcaModule`/`CbamModule`
  for every torch row (timm's eager for `fast_inference`), torchvision `SqueezeExcitation`, and a Keras
  applications-style functional SE block for TF SE. TF ECA/CBAM and every JAX row have no peer of their
  framework, so their "x peer" stays empty. A peer that is not installed is skipped, and the run says so.
- **Peak extra memory:** the bytes a call allocates beyond its input and its output, from the peak that
  `torch.profiler`'s allocation events reach (torch) or XLA's compiled memory analysis (`jax.jit`);
  TensorFlow tracks no CPU allocations and JAX eager has no compiled executable ("-").
- `--json` prints everything (raw per-round times included), `--plot FILE.png` draws time / floor per
  module × backend × mode, `--quick` is a smoke run (size tiny, 1 round; the tests run it). After the
  table the command prints the targets as read from the run (`attnport.bench.report.targets`).

```bash
attnport bench --size large --repeats 25 --json --plot bench.png   # sizes: tiny, small (default), medium, large
THP_MEM_ALLOC_ENABLE=1 GLIBC_TUNABLES=glibc.malloc.hugetlb=1 attnport bench --size large   # huge pages, see below
python -m attnport.bench.first_touch                                     # what a fresh output costs (below)
```

Speed is never asserted in tests: `tests/test_bench.py` checks the machinery only (fields, the floor and
its flags on a synthetic run, pairing, the targets' arithmetic, the plot, `--quick`).

**The targets** (`attnport.bench.report.targets`, each read from a run):

{report.targets_explained()}

## Results on the benchmark machine

A 2-core AMD EPYC VM (2 MiB L2 per core, 32 MiB L3, 24 GiB), Linux transparent huge pages in `madvise`
mode, float32, 2 threads everywhere, large size (N, H, W, C) = (32, 56, 56, 256); torch {v['torch']},
TensorFlow {v['tensorflow']}, JAX {v['jax']}, timm {v['timm']}. Run: `attnport bench --size large --repeats
{big['meta']['repeats']}` (`benchmarks/results/large.json`, the plot below; the presets' rows are in the
JSON). Best streaming bandwidth **{bw['bytes_per_s'] / 1e9:.1f} GB/s** ({bw['best']}), so the floor is
{floors['SE']:.1f} ms for SE and ECA and {floors['CBAM']:.1f} ms for CBAM. The machine is a shared VM:
read ratios, not milliseconds.

{report.bandwidth_markdown(big)}

{report.markdown(big, modules=("SE", "ECA", "CBAM"))}

![time / floor per module, backend and mode](../assets/benchmarks/large.png)

**The targets, read from this run** (peak extra memory in full-size tensors):

{report.targets_markdown(big)}

{_missed_text(missed, big, huge)}

## Why: a fresh output costs more than the work

Every module returns a new tensor, and on this machine the first write to fresh memory dominates.
`python -m attnport.bench.first_touch` (`benchmarks/results/first_touch*.json`) times `y = 2 * x` on the
large tensor:

| case | default | `THP_MEM_ALLOC_ENABLE=1 GLIBC_TUNABLES=glibc.malloc.hugetlb=1` |
|---|---|---|
''' + "\n".join(f"| {k} | {ft[k]:.1f} ms | {fth[k]:.1f} ms |" for k in ft) + f'''

torch's CPU allocator maps a large tensor with 4 KiB pages, and the kernel's page faults on first touch
cost several times the write itself; XLA's CPU allocator (JAX) does the same. Hence the two torch paths:

- **`forward`** (the `eager` rows, and what autograd, `torch.fx`, TorchScript, `torch.export` and
  `torch.compile` see) is one plain formulation, allocating with torch's allocator: SE
  {se_eager['median_s'] * 1e3:.1f} ms against timm's {timm_se['median_s'] * 1e3:.1f} ms
  ({se_eager['ratio_peer']:.2f}× paired).
- **`fast_inference(x)`** (the `fast_inference` rows; `torch_impl/fast.py`) is the explicit opt-in CPU
  path: eval mode, no autograd graph; it writes the output into a buffer whose pages it asks to be
  transparent huge pages (`madvise(MADV_HUGEPAGE)`, what NumPy does for its large arrays), and CBAM works
  in cache-sized blocks of samples (`torch_impl.fast.CACHE_BLOCK_BYTES`, 4 MiB, a tuning value of this
  machine): x·Mc is written straight into the output and rescaled there while it is still in cache, so it
  never exists as a second full-size tensor (peak extra memory: timm's CbamModule
  {report._mb(report.extra_bytes(timm_cbam))} MiB, ours {report._mb(report.extra_bytes(cbam_fast))} MiB). SE
  {se_fast['median_s'] * 1e3:.1f} ms ({se_fast['ratio_peer']:.2f}× timm's eager), CBAM
  {cbam_fast['median_s'] * 1e3:.1f} ms ({cbam_fast['ratio_peer']:.2f}×). `tests/test_torch_fast_inference.py`
  proves it against the oracle and `forward`. torch's own switch `THP_MEM_ALLOC_ENABLE=1` (read once at
  start-up) gives every allocation of the process huge pages instead, `forward` and `torch.compile`
  included (the huge-page table below).
- **`torch.compile`** allocates with torch's allocator too: compiled SE {se_c['median_s'] * 1e3:.1f} ms
  ({se_c['ratio_peer']:.2f}× timm's compiled SE).

The same run with huge pages for every framework (`THP_MEM_ALLOC_ENABLE=1 GLIBC_TUNABLES=glibc.malloc.hugetlb=1
attnport bench --size large --repeats {huge['meta']['repeats']}`, `benchmarks/results/large_hugepages.json`;
TensorFlow's allocator ignores both):

{report.markdown(huge, modules=("SE", "ECA", "CBAM"))}

## Which backend and mode

- **PyTorch, CPU inference:** call `fast_inference(x)` where a block's speed matters and nothing needs
  to trace it; for a whole network start the process with `THP_MEM_ALLOC_ENABLE=1`, which speeds every
  layer's output, and `torch.compile` then fuses CBAM best. NCHW and `channels_last` are within noise of
  each other.
- **Keras / TensorFlow:** use `tf.function(..., jit_compile=True)` (SE {t(big, 'SE')['median_s'] * 1e3:.1f} ms,
  CBAM {t(big, 'CBAM')['median_s'] * 1e3:.1f} ms here); TF's allocator ignores the huge-page switches.
- **JAX / Flax:** always `jax.jit` (or `nnx.jit`); NNX eager dispatches op by op. Start the process with
  `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (SE {j(big, 'SE')['median_s'] * 1e3:.1f} → {j(huge, 'SE')['median_s'] * 1e3:.1f} ms,
  CBAM {j(big, 'CBAM')['median_s'] * 1e3:.1f} → {j(huge, 'CBAM')['median_s'] * 1e3:.1f} ms in the runs above). If
  the input is not needed afterwards, `jax.jit(f, donate_argnums=...)` lets XLA write SE/ECA's output
  over it.
- **Training** (autograd graph, BN batch statistics) runs the plain formulation in every backend: the
  peers' arithmetic at the peers' speed.

## What each module costs

T = N·H·W·C elements, R the reduced width, k the kernel size (FLOPs count a multiply-add as 2):

| module | parameters | forward FLOPs | memory traffic (floor) | peak extra memory, ours (measured) |
|---|---|---|---|---|
| SE | 2·C·R (+ R + C biases) | ≈ 2T + 4·N·C·R | 3 × tensor | O(N·C) |
| ECA | k | ≈ 2T + 2·N·C·k | 3 × tensor | O(N·C) |
| CBAM | 2·C·R (+ R + C) + 2·k² (+ 2 BN affine, + 2 BN buffers) | ≈ 6T + 8·N·C·R + 4·N·H·W·k² | 4 × tensor | O(N·(C + H·W)) plus one ≤ 4 MiB block of samples (`fast_inference`); `forward` and timm's eager CbamModule: one full-size tensor (x·Mc) |

At the large size T = 25.7 M: SE does ~54 MFLOP while moving 308 MB, 0.17 FLOP/byte. Every module here is
memory-bound, which is why the floor, not the FLOP count, predicts its time.
'''


# first_touch.py's cases: a fresh output in the memory each backend and mode allocates from, and the
# same write into memory already touched
FRESH = {("torch", "eager"): "torch, new tensor (torch's allocator)",
         ("torch", "compiled"): "torch, new tensor (torch's allocator)",
         ("torch", "fast_inference"): "torch, new tensor with huge pages (torch_impl.fast.fresh_like)",
         ("tf", "compiled"): "tensorflow XLA, new tensor", ("tf", "eager"): "tensorflow XLA, new tensor",
         ("jax", "compiled"): "jax.jit, new array", ("jax", "eager"): "jax.jit, new array"}
TOUCHED = "torch, into a preallocated tensor"


def _worst_row(run, target):
    """The row a target's worst case names (``"SE large eager nchw"``), of the target's backend."""
    module, size, mode, layout = target["worst"].split()
    backend = target["target"].split()[0]
    backend = "torch" if backend in ("torch", "peak") else backend
    return next(r for r in run["rows"] if (r["module"], r["size"], r["mode"], r["layout"], r["backend"])
                == (module, size, mode, layout, backend))


def _spread(ratios) -> tuple[float, float]:
    q = sorted(ratios)
    return q[len(q) // 4], q[(3 * len(q)) // 4]


def _paired_ratios(run, row, other_mode=None):
    """Per-round ratios of ``row`` to its peer (or, with ``other_mode``, to the same case in that mode)."""
    if other_mode is None:
        backend, mode = row["peer"].split()[0], "eager" if row["mode"] == "fast_inference" else row["mode"]
    else:
        backend, mode = row["backend"], other_mode
    other = next(r for r in run["rows"] if (r["backend"], r["mode"], r["module"], r["size"], r["layout"])
                 == (backend, mode, row["module"], row["size"], row["layout"]))
    return [a / b for a, b in zip(row["times_s"], other["times_s"])]


def _noise_why(t, ratios) -> str:
    q1, q3 = _spread(ratios)
    if q1 > t["limit"]:
        raise ValueError(f"target {t['target']!r}: per-round ratios {q1:.2f}-{q3:.2f} all exceed the limit; this "
                         "miss is not noise: find its cause and write it here")
    return (f"the per-round ratios of that case span {q1:.2f}–{q3:.2f} (interquartile), so the miss is within "
            "this run's noise, not a cost of the formulation.")


def _ratio_why(t, big, huge) -> str:
    return _noise_why(t, _paired_ratios(big, _worst_row(big, t)))


def _compiled_why(t, big, huge) -> str:
    return _noise_why(t, _paired_ratios(big, _worst_row(big, t), other_mode="eager"))


_MORE_READS = {1: "one more read pass", 2: "two more read passes"}


def _floor_why(t, big, huge) -> str:
    row = _worst_row(big, t)
    ft = load("first_touch.json")["median_ms"]
    fresh, touched = ft[FRESH[(row["backend"], row["mode"])]], ft[TOUCHED]
    floor_ms, median_ms = row["floor_s"] * 1e3, row["median_s"] * 1e3
    bw = big["meta"]["bandwidth"]
    read_ms = row["floor_bytes"] / report.PASSES[row["kind"]] / bw["bytes_per_s"] * 1e3  # one read pass
    composed = fresh + (report.PASSES[row["kind"]] - 2) * read_ms
    text = (f"`y = 2·x` into fresh memory takes {fresh:.1f} ms in that mode's allocator (`first_touch`: the kernel "
            f"faults in and zeroes every new page) against {touched:.1f} ms into touched memory, so the output "
            f"alone is {fresh / floor_ms:.1f}× the {floor_ms:.1f} ms floor, which counts bytes at the best "
            f"read-only bandwidth and no page faults. That write plus the module's "
            f"{_MORE_READS[report.PASSES[row['kind']] - 2]} at the best bandwidth come to {composed:.1f} ms "
            f"({composed / floor_ms:.1f}× floor); the case's median, {median_ms:.1f} ms, is "
            f"{median_ms / composed:.2f}× that.")
    if row["noisy"]:
        text += (f" Its rounds are noisy (IQR {100 * row['iqr_s'] / row['median_s']:.0f} % of the median, the "
                 f"slowest {max(row['times_s']) * 1e3:.0f} ms): rounds that take fresh memory stall now and then.")
    if row["backend"] == "tf":
        text += " TensorFlow's allocator ignores the huge-page switches."
    with_pages = next((h for h in report.targets(huge) if h["target"] == t["target"]), None)
    if with_pages:
        text += (f" With huge pages for every framework (the second run) the best mode is at "
                 f"{with_pages['measured']:.2f}× floor ({with_pages['worst']}).")
    return text


# Why a target is missed, by target name prefix; each reads its numbers from the committed runs. A missed
# target without an entry, or a "noise" miss whose rounds all exceed the limit, stops the rewrite.
MISSED_WHY = {
    "torch default forward / timm's": _ratio_why,
    "torch fast_inference / timm's eager": _ratio_why,
    "torch compiled / eager": _compiled_why,
    "torch best mode / floor": _floor_why, "tf best mode / floor": _floor_why, "jax best mode / floor": _floor_why,
}


def _missed_text(missed, big, huge) -> str:
    if not missed:
        return "Every target is met in this run."
    met = [t["target"] for t in report.targets(big) if t["met"] is True]
    lines = [f"Met: {'; '.join(met)}." if met else "No target is met.", "", "Missed, and why:", ""]
    for t in missed:
        why = next((w for prefix, w in MISSED_WHY.items() if t["target"].startswith(prefix)), None)
        if why is None:
            raise ValueError(f"target {t['target']!r} is missed in the committed run and MISSED_WHY does not say "
                             "why: read the run and write it")
        lines.append(f"- **{t['target']}** ({t['measured']:.2f} against {t['limit']:g}, {t['worst']}): "
                     + why(t, big, huge))
    return "\n".join(lines)


PICK_PAGE = ROOT / "docs" / "how-to" / "pick-a-backend.md"
METHOD_PAGE = ROOT / "docs" / "explanation" / "benchmark-method.md"


def main() -> None:
    PICK_PAGE.write_text(section())
    METHOD_PAGE.write_text(rewrite_blocks(METHOD_PAGE.read_text(), page_blocks()))


if __name__ == "__main__":
    main()
