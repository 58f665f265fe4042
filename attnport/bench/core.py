"""The benchmark: cases (module x backend x mode x layout, plus peers), timing, the bandwidth floor, memory.

Method (README "Choosing a backend", benchmarks/README.md):

- threads: one count ``n`` for every framework (default: the CPUs this process may run on).
  torch: ``set_num_threads(n)``, ``set_num_interop_threads(1)``; TensorFlow: ``tf.config.threading``
  intra-op ``n``, inter-op ``1``, set before TF's first use; JAX/XLA has no thread-count setting
  besides the process's CPU affinity, so ``n`` below the CPU count pins the whole process to ``n`` CPUs
  (``os.sched_setaffinity``), and ``n == 1`` also sets ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``.
  What was actually applied is reported in ``meta.threads`` (a setting is impossible once its
  framework has started; the bench then reports the value in force).
- import order: torch, then ``triton`` when installed, then TensorFlow, then JAX (libtriton loaded
  after TensorFlow segfaults).
- timing: the first call (compile, for the compiled modes) is timed apart as ``compile_s``, then
  ``warmup`` untimed calls; then ``repeats`` rounds, each timing one copy (the bandwidth) and every case
  in turn, a case as ``calls_per_round`` back-to-back calls (about ``ROUND_S``; 1 for large tensors)
  divided by their number, each call blocking until the result exists (torch on CPU is synchronous; TF:
  ``.numpy()``; JAX: ``block_until_ready()``). Median and IQR per case; ratio to the peer = median of
  the per-round ratios.
- floor: bandwidth = tensor bytes / median time of a NumPy copy of the largest requested tensor into a
  preallocated array (NOTES §11's convention), floor = passes x tensor bytes / bandwidth = passes x copy
  time, passes = 3 for SE and ECA (pool, read, write) and 4 for CBAM.
- CPU only: every framework runs on its CPU device.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import pathlib
import statistics
import sys
import time

import numpy as np

from . import report

SIZES = {"tiny": (2, 8, 8, 32), "small": (8, 14, 14, 64), "medium": (32, 28, 28, 128),  # N, H, W, C
         "large": (32, 56, 56, 256)}
MODULES = ("SE", "SE.timm", "ECA", "ECA.timm", "CBAM", "CBAM.timm")
MODES = ("eager", "compiled")
BACKENDS = ("torch", "tf", "jax")
PASSES = {"se": 3, "eca": 3, "cbam": 4}
ROUND_S = 0.01            # a case's share of one round: back-to-back calls for about this long
MAX_CALLS_PER_ROUND = 200
# peer -> (python package it needs, the families it has)
PEERS = {"timm": ("timm", ("se", "eca", "cbam")), "torchvision": ("torchvision", ("se",)),
         "keras": ("tensorflow", ("se",))}
LAYOUTS = {"torch": ("nchw", "channels_last"), "timm": ("nchw", "channels_last"),
           "torchvision": ("nchw", "channels_last"), "tf": ("nhwc",), "keras": ("nhwc",), "jax": ("nhwc",)}
FRAMEWORK = {"torch": "torch", "timm": "torch", "torchvision": "torch", "tf": "tensorflow", "keras": "tensorflow",
             "jax": "jax"}


class BenchError(ValueError):
    """A bad request: unknown size, backend, module or mode, or a backend that is not installed."""


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def spec_for(name: str, channels: int):
    """``"SE"`` -> ``reference.SE(channels)``; ``"SE.timm"`` -> ``reference.SE.timm(channels)``."""
    import reference

    family, _, preset = name.partition(".")
    cls = getattr(reference, family)
    return getattr(cls, preset)(channels) if preset else cls(channels)


def floor_bytes(kind: str, shape, itemsize: int = 4) -> int:
    """Bytes a memory-bound module must move: PASSES[kind] x the tensor's bytes."""
    return PASSES[kind] * math.prod(shape) * itemsize


def stats(times) -> dict:
    q1, med, q3 = np.percentile(np.asarray(times, dtype=float), [25, 50, 75])
    return {"median_s": float(med), "iqr_s": float(q3 - q1)}


def configure_threads(threads: int | None, frameworks) -> dict:
    """Set one thread count everywhere, importing the frameworks in a safe order; report what holds."""
    n = threads or len(os.sched_getaffinity(0))
    notes = {"requested": n}
    if n < len(os.sched_getaffinity(0)):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])
    notes["cpu_affinity"] = len(os.sched_getaffinity(0))
    if "jax" in frameworks and "jax" not in sys.modules and n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    notes["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "torch" in frameworks or "tensorflow" in frameworks:
        import torch

        if _installed("triton"):
            import triton  # noqa: F401  (before TensorFlow: see the module docstring)
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        notes["torch"] = {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
    if "tensorflow" in frameworks:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            notes["tf_note"] = "TensorFlow had started before the bench: its thread settings were left as found"
        notes["tf"] = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                       "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    if "jax" in frameworks:
        import jax

        notes["jax"] = {"cpu_affinity": notes["cpu_affinity"], "multi_thread_eigen": n != 1}
        jax.devices("cpu")
    return notes


# ------------------------------------------------------------------------------------------ runners
# make_runner returns (fn, memory): fn() runs one forward and blocks until its result exists;
# memory(fn) -> (bytes or None, how it was measured).

def _torch_memory(fn):
    """Peak extra bytes the CPU allocator held during one call, from torch.profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    level = peak = 0
    for e in events:
        level += e.nbytes()
        peak = max(peak, level)
    return peak, ("torch.profiler(profile_memory=True) allocation events: peak of their running sum over one call "
                  "(the output included)")


def _no_memory(why):
    return lambda fn: (None, why)


def _torch_module(target, spec):
    c = spec.channels
    if target == "torch":
        import torch_impl
        return torch_impl.build(spec, seed=0)
    if target == "torchvision":
        from torchvision.ops import SqueezeExcitation
        return SqueezeExcitation(c, spec.reduced_channels).eval()
    from timm.layers import EcaModule, SEModule
    from timm.layers.cbam import CbamModule
    if spec.kind == "se":
        return SEModule(c, rd_channels=spec.reduced_channels).eval()
    if spec.kind == "eca":
        return EcaModule(c, kernel_size=spec.kernel_size).eval()
    return CbamModule(c, rd_channels=spec.reduced_channels, spatial_kernel_size=spec.spatial_kernel).eval()


def _torch_runner(target, spec, x, mode, layout):
    import torch

    module = _torch_module(target, spec)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    if layout == "channels_last":
        xt = xt.contiguous(memory_format=torch.channels_last)
        module = module.to(memory_format=torch.channels_last)
    f = torch.compile(module, fullgraph=True) if mode == "compiled" else module

    def fn():
        with torch.inference_mode():
            return f(xt)

    return fn, _torch_memory


def _keras_se(spec, shape):
    import keras

    n, h, w, c = shape
    inputs = keras.Input((h, w, c))
    se = keras.layers.GlobalAveragePooling2D()(inputs)
    se = keras.layers.Reshape((1, 1, c))(se)
    se = keras.layers.Conv2D(spec.reduced_channels, 1, activation="relu")(se)
    se = keras.layers.Conv2D(c, 1, activation="sigmoid")(se)
    return keras.Model(inputs, keras.layers.multiply([inputs, se]))


def _tf_runner(target, spec, x, mode, layout):
    import tensorflow as tf

    if target == "keras":
        layer = _keras_se(spec, x.shape)
    else:
        import tf_impl
        layer = tf_impl.build(spec, seed=0)
    xt = tf.constant(x)

    def call(t):
        return layer(t, training=False)

    f = tf.function(call, jit_compile=True) if mode == "compiled" else call
    return (lambda: f(xt).numpy()), _no_memory(
        "not measured: tf.config.experimental.get_memory_info('CPU:0') reports 0: TF tracks no CPU allocations")


def _jax_runner(target, spec, x, mode, layout):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import jax_impl

    module = jax_impl.build(spec, seed=0)
    xj = jnp.asarray(x)
    if mode == "eager":
        return (lambda: module(xj).block_until_ready()), _no_memory(
            "not measured: op-by-op dispatch has no memory analysis")
    graphdef, state = nnx.split(module)
    f = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))

    def memory(_fn):
        m = f.lower(state, xj).compile().memory_analysis()
        if m is None:
            return None, "not available: memory_analysis() returned None"
        return (int(m.temp_size_in_bytes + m.output_size_in_bytes),
                "jax.jit(f).lower(x).compile().memory_analysis(): temp + output bytes")

    return (lambda: f(state, xj).block_until_ready()), memory


RUNNERS = {"torch": _torch_runner, "timm": _torch_runner, "torchvision": _torch_runner, "tf": _tf_runner,
           "keras": _tf_runner, "jax": _jax_runner}


# ------------------------------------------------------------------------------------------ cases

@dataclasses.dataclass
class Case:
    module: str
    size: str
    shape: tuple
    target: str          # a backend or a peer
    mode: str
    layout: str
    is_peer: bool


def _check_choice(what, values, allowed):
    bad = [v for v in values if v not in allowed]
    if bad:
        raise BenchError(f"unknown {what} {', '.join(map(repr, bad))}; choose from {', '.join(allowed)}")


def resolve(sizes=None, backends=None, modules=None, modes=None, peers=True):
    """Validated (sizes, backends, modules, modes, peers); raises BenchError on a bad request."""
    sizes, modules, modes = list(sizes or ["small"]), list(modules or MODULES), list(modes or MODES)
    _check_choice("size", sizes, tuple(SIZES))
    _check_choice("module", modules, MODULES)
    _check_choice("mode", modes, MODES)
    if backends:
        _check_choice("backend", backends, BACKENDS)
        missing = [b for b in backends if not _installed(FRAMEWORK[b] if b != "jax" else "flax")]
        if missing:
            raise BenchError(f"backend {', '.join(missing)} is not installed")
    else:
        backends = [b for b in BACKENDS if _installed(FRAMEWORK[b] if b != "jax" else "flax")]
    if peers is True:
        peers = [p for p, (package, _) in PEERS.items() if _installed(package)]
    else:
        peers = list(peers or [])
        _check_choice("peer", peers, tuple(PEERS))
    return list(dict.fromkeys(sizes)), list(dict.fromkeys(backends)), modules, modes, peers


def cases(sizes, backends, modules, modes, peers):
    out = []
    for size in sizes:
        for module in modules:
            kind = module.split(".")[0].lower()
            targets = [(b, False) for b in backends] + [(p, True) for p in peers if kind in PEERS[p][1]]
            for target, is_peer in targets:
                for mode in modes:
                    for layout in LAYOUTS[target]:
                        out.append(Case(module, size, SIZES[size], target, mode, layout, is_peer))
    return out


def matching_peer(row: dict, rows) -> dict | None:
    """The peer row a backend row is compared with: same module, size and mode; keras for tf SE, else timm,
    in the same layout for torch and NCHW otherwise."""
    if row["is_peer"]:
        return None
    wanted = ["keras", "timm"] if row["backend"] == "tf" else ["timm"]
    layout = row["layout"] if row["backend"] == "torch" else "nchw"
    for peer in wanted:
        for r in rows:
            if (r["is_peer"] and r["backend"] == peer and r["module"] == row["module"] and r["size"] == row["size"]
                    and r["mode"] == row["mode"] and r["layout"] in (layout, "nhwc") and r["median_s"]):
                return r
    return None


def _time_calls(fn, calls: int) -> float:
    """Seconds per call of ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _calls_per_round(fn) -> int:
    """Back-to-back calls filling about ROUND_S (1 for a large tensor), so that a fast case is timed warm
    (its threads awake, its weights cached), as it runs inside a network, not cold after the other cases."""
    estimate = min(_time_calls(fn, 1) for _ in range(3))
    return max(1, min(MAX_CALLS_PER_ROUND, math.ceil(ROUND_S / max(estimate, 1e-9))))


def _copy_fn(nbytes: int):
    """A NumPy float32 copy of ``nbytes`` into a preallocated array (no page faults in the timed copy)."""
    a = np.ones(max(1, nbytes // 4), np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)
    return a.nbytes, lambda: np.copyto(b, a)


def _memory_system() -> dict:
    """What decides the cost of a fresh output allocation on this machine (README "Choosing a backend")."""
    try:
        thp = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        thp = None
    return {"transparent_hugepage": thp, "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
            "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES")}


def count_steps(repeats: int = 10, memory: bool = True, **request) -> int:
    """Progress steps of a run: each case's setup, each round, each case's memory measurement."""
    n = len(cases(*resolve(**request)))
    return n * (2 if memory else 1) + repeats


def run_bench(sizes=None, backends=None, modules=None, modes=None, peers=True, warmup=3, repeats=10,
              threads=None, memory=True, progress=None) -> dict:
    """Run every case; returns ``{"meta": {...}, "rows": [...]}`` (the JSON `attnport bench --json` prints).

    Every case is built, called once (``compile_s``) and warmed up; then ``repeats`` rounds each time
    the bandwidth copy and every case once, in turn, so that a slow spell of the machine hits every case
    of a round alike. Ratios to the peer are the median of the per-round ratios (paired).
    """
    sizes, backends, modules, modes, peers = resolve(sizes, backends, modules, modes, peers)
    if warmup < 0 or repeats < 1 or (threads is not None and threads < 1):
        raise BenchError("need warmup >= 0, repeats >= 1 and threads >= 1")
    step = progress or (lambda: None)
    todo = cases(sizes, backends, modules, modes, peers)
    frameworks = {FRAMEWORK[c.target] for c in todo}
    thread_notes = configure_threads(threads, frameworks)
    copy_bytes, copy = _copy_fn(max(math.prod(SIZES[s]) for s in sizes) * 4)
    rng = np.random.default_rng(0)
    inputs = {s: rng.standard_normal(SIZES[s], dtype=np.float32) for s in sizes}
    rows, runners = [], []
    for case in todo:
        spec = spec_for(case.module, case.shape[3])
        row = {"module": case.module, "kind": spec.kind, "spec": repr(spec), "size": case.size,
               "shape_nhwc": list(case.shape), "backend": case.target, "is_peer": case.is_peer, "mode": case.mode,
               "layout": case.layout, "floor_bytes": floor_bytes(spec.kind, case.shape), "floor_s": None,
               "warmup": warmup, "repeats": repeats, "calls_per_round": None, "median_s": None, "iqr_s": None,
               "times_s": [], "compile_s": None, "ratio_floor": None, "peer": None, "ratio_peer": None,
               "memory_bytes": None, "extra_bytes": None, "memory_note": None, "error": None}
        runner = None
        try:
            runner = RUNNERS[case.target](case.target, spec, inputs[case.size], case.mode, case.layout)
            row["compile_s"] = _time_calls(runner[0], 1)
            for _ in range(warmup):
                runner[0]()
            row["calls_per_round"] = _calls_per_round(runner[0])
        except Exception as exc:  # noqa: BLE001 - one failing case must not stop the run; it is reported
            row["error"], runner = f"{type(exc).__name__}: {exc}"[:300], None
        rows.append(row)
        runners.append(runner)
        step()
    copy_calls, copy_times = _calls_per_round(copy), []
    for _ in range(repeats):
        copy_times.append(_time_calls(copy, copy_calls))
        for row, runner in zip(rows, runners):
            if runner is None or row["error"]:
                continue
            try:
                row["times_s"].append(_time_calls(runner[0], row["calls_per_round"]))
            except Exception as exc:  # noqa: BLE001
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        step()
    bandwidth = {"tensor_bytes": copy_bytes, "bytes_moved": copy_bytes, "repeats": repeats,
                 "calls_per_round": copy_calls, **stats(copy_times),
                 "times_s": copy_times}
    bandwidth["bytes_per_s"] = copy_bytes / bandwidth["median_s"]
    for row, runner in zip(rows, runners):
        row["floor_s"] = row["floor_bytes"] / bandwidth["bytes_per_s"]
        if row["error"]:
            row["times_s"] = []
        elif row["times_s"]:
            row.update(stats(row["times_s"]))
            row["ratio_floor"] = row["median_s"] / row["floor_s"]
            if memory:
                try:
                    row["memory_bytes"], row["memory_note"] = runner[1](runner[0])
                    row["extra_bytes"] = report.extra_bytes(row)
                except Exception as exc:  # noqa: BLE001
                    row["memory_note"] = f"not measured: {type(exc).__name__}: {exc}"[:300]
        step()
    for row in rows:
        peer = matching_peer(row, rows)
        if peer and row["median_s"]:
            row["peer"] = f"{peer['backend']} ({peer['layout']})"
            row["ratio_peer"] = statistics.median(a / b for a, b in zip(row["times_s"], peer["times_s"]))
    meta = {"sizes": {s: list(SIZES[s]) for s in sizes}, "dtype": "float32", "device": "cpu",
            "threads": thread_notes, "memory_system": _memory_system(), "bandwidth": bandwidth, "warmup": warmup,
            "repeats": repeats, "passes": PASSES,
            "versions": _versions(frameworks | {"numpy"} | ({"timm"} if "timm" in peers else set()))}
    return {"meta": meta, "rows": rows}


def _versions(packages) -> dict:
    out = {}
    for p in sorted(packages):
        module = sys.modules.get(p)
        out[p] = getattr(module, "__version__", None) if module else None
    return out



