"""The benchmark: cases (module x backend x mode x layout, plus peers), timing, the bandwidth floor, memory.

Method (docs/how-to/pick-a-backend.md, benchmarks/README.md):

- processes: every framework is timed in this one process by default: with TensorFlow's and JAX's thread
  pools loaded beside torch, torch's times did not change (``python -m attnport.bench.noise``,
  benchmarks/README.md "Noise"). ``isolate=True`` times each framework (torch with its peers timm and
  torchvision; TensorFlow with the Keras peer; JAX) in a process of its own and merges the results.
- threads: one count ``n`` for every framework (default: the CPUs this process may run on).
  torch: ``set_num_threads(n)``, ``set_num_interop_threads(1)``; TensorFlow: ``tf.config.threading``
  intra-op ``n``, inter-op ``1``, set before TF's first use; JAX/XLA has no thread-count setting
  besides the process's CPU affinity, so ``n`` below the CPU count pins the process to ``n`` CPUs
  (``os.sched_setaffinity``), and ``n == 1`` also sets ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``.
  What was actually applied is reported in ``meta.threads``.
- import order: torch, then ``triton`` when installed, then TensorFlow, then JAX (libtriton loaded
  after TensorFlow segfaults); the frameworks' start-up chatter is filtered (``attnport.quiet``).
- timing: the first call (compile, for the compiled modes) is timed apart as ``compile_s``, then
  ``warmup`` untimed calls; then ``repeats`` rounds, each timing every bandwidth kernel and every case
  in turn, each as ``calls_per_round`` back-to-back calls (about ``ROUND_S``; 1 for large tensors)
  divided by their number, each call blocking until the result exists (torch on CPU is synchronous; TF:
  ``.numpy()``; JAX: ``block_until_ready()``). Median and IQR per case; a case whose IQR exceeds
  ``NOISY_IQR`` of its median is flagged ``noisy``.
- floor: the bytes a module must move (``PASSES`` x the tensor's bytes) / the best streaming bandwidth of
  the run: the fastest of the ``bandwidth_kernels`` (a copy counted as twice the buffer's bytes, a
  reduction as once), timed on a buffer of at least ``4 x`` the last-level cache in the same rounds as the
  cases. A tensor whose input and output fit in the last-level cache has no memory floor (``ratio_floor``
  None, ``floor_note`` says why). ``ratio_floor`` is paired: the median over rounds of each round's time
  over that round's floor, the floor scaled by the NumPy copy timed in the same round and process against
  that copy's median in the process where the best kernel ran (so that a process timed during a slow
  spell of the machine is judged by the bandwidth of that spell). A ratio below 1 means the floor is wrong
  (``below_floor``).
- peers: a row is compared with the peer of its own framework (``PEER_OF``): timm for torch, the Keras
  SE block for TF SE, none otherwise; the ratio is the median of the per-round ratios (same process).
- CPU only: every framework runs on its CPU device.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from .. import quiet
from . import report
from .runners import RUNNERS, Unavailable

SIZES = {"tiny": (2, 8, 8, 32), "small": (8, 14, 14, 64), "medium": (32, 28, 28, 128),  # N, H, W, C
         "large": (32, 56, 56, 256)}
MODULES = ("SE", "SE.timm", "ECA", "ECA.timm", "CBAM", "CBAM.timm")
MODES = ("eager", "fast_inference", "compiled")  # fast_inference: torch_impl's opt-in method, torch only
BACKENDS = ("torch", "tf", "jax")
PASSES = report.PASSES
ROUND_S = 0.01            # a case's share of one round: back-to-back calls for about this long
MAX_CALLS_PER_ROUND = 200
NOISY_IQR = 0.3           # IQR / median above which a case is flagged noisy
# peer -> (python package it needs, the families it has)
PEERS = {"timm": ("timm", ("se", "eca", "cbam")), "torchvision": ("torchvision", ("se",)),
         "keras": ("tensorflow", ("se",))}
# the peer a row of our backend is compared with, per family: one of its own framework, or none
PEER_OF = {"torch": {"se": "timm", "eca": "timm", "cbam": "timm"}, "tf": {"se": "keras"}, "jax": {}}
TIMED_LAYOUTS = {"torch": ("nchw", "channels_last"), "timm": ("nchw", "channels_last"),  # each target's timed layouts
                 "torchvision": ("nchw", "channels_last"), "tf": ("nhwc",), "keras": ("nhwc",), "jax": ("nhwc",)}
FRAMEWORK = {"torch": "torch", "timm": "torch", "torchvision": "torch", "tf": "tensorflow", "keras": "tensorflow",
             "jax": "jax"}
PROCESS_ORDER = ("torch", "tensorflow", "jax")
REFERENCE_KERNEL = "numpy copy"   # timed in every process: the pairing reference
LLC_FALLBACK = 32 << 20           # the last-level cache assumed where sysfs does not say


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
    """Bytes a module must move through memory: PASSES[kind] x the tensor's bytes (SE/ECA: read x to pool,
    read x and write y to scale; CBAM: pool, the spatial statistics of x*Mc, read and write)."""
    return PASSES[kind] * math.prod(shape) * itemsize


def stats(times) -> dict:
    q1, med, q3 = np.percentile(np.asarray(times, dtype=float), [25, 50, 75])
    return {"median_s": float(med), "iqr_s": float(q3 - q1)}


def is_noisy(median_s, iqr_s) -> bool:
    """IQR above NOISY_IQR of the median: the case's rounds disagree too much for its median to be quoted."""
    return bool(median_s) and iqr_s is not None and iqr_s > NOISY_IQR * median_s


LLC_ENV = "ATTNPORT_LLC_BYTES"


def last_level_cache_bytes() -> int | None:
    """The largest CPU cache of cpu0 (sysfs), or None where the system does not say; ``$ATTNPORT_LLC_BYTES``
    overrides it (a VM's sysfs may report the host's whole cache: the floor's buffer is 4 x this)."""
    override = os.environ.get(LLC_ENV)
    if override:
        try:
            value = int(override)
        except ValueError:
            raise BenchError(f"${LLC_ENV}={override!r} is not a number of bytes") from None
        if value <= 0:
            raise BenchError(f"${LLC_ENV}={override!r} must be a positive number of bytes")
        return value
    sizes = []
    for index in pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes) if sizes else None


def floor_note(shape, llc_bytes: int, itemsize: int = 4) -> str | None:
    """Why a tensor has no memory floor (its input and output fit in the last-level cache), or None."""
    both = 2 * math.prod(shape) * itemsize
    if both <= llc_bytes:
        return (f"no memory floor: input and output ({both / 2**20:.3g} MiB) fit in the {llc_bytes / 2**20:.3g} MiB "
                "last-level cache")
    return None


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
    quiet.environment()
    if "torch" in frameworks:
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
        tf = quiet.import_quietly("tensorflow")
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            notes["tf_note"] = "TensorFlow had started before the bench: its thread settings were left as found"
        notes["tf"] = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                       "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    if "jax" in frameworks:
        jax = quiet.import_quietly("jax")
        notes["jax"] = {"cpu_affinity": notes["cpu_affinity"], "multi_thread_eigen": n != 1}
        jax.devices("cpu")
    return notes


# ------------------------------------------------------------------------------------------ bandwidth

@dataclasses.dataclass
class Kernel:
    name: str
    bytes_moved: int     # a copy: read + write = 2 x the buffer; a reduction: 1 x
    threads: int
    fn: object


def bandwidth_kernels(buffer_bytes: int, frameworks, threads: int) -> list[Kernel]:
    """The streaming kernels whose best bandwidth sets the floor: a NumPy copy into a preallocated array
    (NumPy copies on one thread) and a NumPy sum (read-only), everywhere; where torch is loaded, torch's
    ``copy_`` into a preallocated tensor and ``sum`` at the bench's thread count."""
    a = np.ones(max(1, buffer_bytes // 4), np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)  # touched: no page faults in the timed kernels
    out = [Kernel("numpy copy", 2 * a.nbytes, 1, lambda: np.copyto(b, a)),
           Kernel("numpy sum", a.nbytes, 1, lambda: np.add.reduce(a))]
    if "torch" in frameworks:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out += [Kernel("torch copy_", 2 * a.nbytes, threads, lambda: tb.copy_(ta)),
                Kernel("torch sum", a.nbytes, threads, lambda: ta.sum())]
    return out


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


@dataclasses.dataclass
class Plan:
    sizes: list
    backends: list
    modules: list
    modes: list
    peers: list
    peers_skipped: dict  # peer -> why it is not in the run


def _check_choice(what, values, allowed):
    bad = [v for v in values if v not in allowed]
    if bad:
        raise BenchError(f"unknown {what} {', '.join(map(repr, bad))}; choose from {', '.join(allowed)}")


def _backend_installed(b):
    return _installed("flax" if b == "jax" else FRAMEWORK[b])


def resolve(sizes=None, backends=None, modules=None, modes=None, peers=True) -> Plan:
    """The validated request; raises BenchError on a bad one. A peer that is not installed is skipped and
    ``peers_skipped`` says so; a peer runs only beside a backend of its own framework."""
    sizes, modules, modes = list(sizes or ["small"]), list(modules or MODULES), list(modes or MODES)
    _check_choice("size", sizes, tuple(SIZES))
    _check_choice("module", modules, MODULES)
    _check_choice("mode", modes, MODES)
    if backends:
        _check_choice("backend", backends, BACKENDS)
        missing = [b for b in backends if not _backend_installed(b)]
        if missing:
            raise BenchError(f"backend {', '.join(missing)} is not installed")
    else:
        backends = [b for b in BACKENDS if _backend_installed(b)]
    frameworks = {FRAMEWORK[b] for b in backends}
    wanted = [p for p in PEERS if FRAMEWORK[p] in frameworks] if peers is True else list(peers or [])
    _check_choice("peer", wanted, tuple(PEERS))
    skipped = {p: f"{PEERS[p][0]} is not installed" for p in wanted if not _installed(PEERS[p][0])}
    wanted = [p for p in wanted if p not in skipped and FRAMEWORK[p] in frameworks]
    return Plan(list(dict.fromkeys(sizes)), list(dict.fromkeys(backends)), modules, list(dict.fromkeys(modes)),
                wanted, skipped)


def cases(plan: Plan) -> list[Case]:
    out = []
    for size in plan.sizes:
        for module in plan.modules:
            kind = module.split(".")[0].lower()
            targets = [(b, False) for b in plan.backends] + [(p, True) for p in plan.peers if kind in PEERS[p][1]]
            for target, is_peer in targets:
                for mode in plan.modes:
                    if mode == "fast_inference" and target != "torch":
                        continue
                    for layout in TIMED_LAYOUTS[target]:
                        out.append(Case(module, size, SIZES[size], target, mode, layout, is_peer))
    return out


def matching_peer(row: dict, rows) -> dict | None:
    """The peer row a backend row is compared with: the peer of its own framework for its family
    (``PEER_OF``: timm for torch, the Keras SE block for TF SE, none for the rest), same module, size and
    layout, and the same mode (the peer's eager for ``fast_inference``)."""
    if row["is_peer"]:
        return None
    peer = PEER_OF.get(row["backend"], {}).get(row["kind"])
    mode = "eager" if row["mode"] == "fast_inference" else row["mode"]
    for r in rows:
        if (peer and r["is_peer"] and r["backend"] == peer and r["module"] == row["module"]
                and r["size"] == row["size"] and r["mode"] == mode and r["layout"] == row["layout"] and r["median_s"]):
            return r
    return None


# ------------------------------------------------------------------------------------------ timing

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


def _memory_system() -> dict:
    """What decides the cost of a fresh output allocation on this machine (docs/how-to/pick-a-backend.md)."""
    try:
        thp = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        thp = None
    return {"transparent_hugepage": thp, "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
            "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES")}


def _groups(todo) -> dict:
    """The cases per framework, in the safe import order."""
    groups = {}
    for fw in PROCESS_ORDER:
        mine = [c for c in todo if FRAMEWORK[c.target] == fw]
        if mine:
            groups[fw] = mine
    return groups


def count_steps(plan: Plan, repeats: int = 10, memory: bool = True, isolate: bool = False) -> int:
    """Progress steps of a run: each case's setup, each round of each process, each case's memory."""
    todo = cases(plan)
    processes = len(_groups(todo)) if isolate else 1
    return len(todo) * (2 if memory else 1) + repeats * max(1, processes)


def _buffer_bytes(sizes, llc: int) -> int:
    return max(max(math.prod(SIZES[s]) for s in sizes) * 4, 4 * llc)


def _new_row(case: Case, warmup: int, repeats: int, process: str) -> dict:
    spec = spec_for(case.module, case.shape[3])
    return {"module": case.module, "kind": spec.kind, "spec": repr(spec), "size": case.size,
            "shape_nhwc": list(case.shape), "backend": case.target, "framework": FRAMEWORK[case.target],
            "process": process, "is_peer": case.is_peer, "mode": case.mode, "layout": case.layout,
            "floor_bytes": floor_bytes(spec.kind, case.shape), "floor_s": None, "floor_note": None,
            "warmup": warmup, "repeats": repeats, "calls_per_round": None, "median_s": None, "iqr_s": None,
            "noisy": False, "times_s": [], "compile_s": None, "ratio_floor": None, "below_floor": False,
            "peer": None, "ratio_peer": None, "memory_bytes": None, "extra_bytes": None, "memory_note": None,
            "error": None}


def measure(todo, sizes, warmup, repeats, threads, memory, step, process="main") -> dict:
    """Time ``todo`` in this process: build, first call, warm-up, then interleaved rounds of the bandwidth
    kernels and every case, then memory. Returns one part of a run (rows not yet finished by ``finish``)."""
    frameworks = {FRAMEWORK[c.target] for c in todo}
    thread_notes = configure_threads(threads, frameworks)
    llc = last_level_cache_bytes() or LLC_FALLBACK
    kernels = bandwidth_kernels(_buffer_bytes(sizes, llc), frameworks, thread_notes["requested"])
    rng = np.random.default_rng(0)
    inputs = {s: rng.standard_normal(SIZES[s], dtype=np.float32) for s in sizes}
    rows, runners, unavailable = [], [], []
    for case in todo:
        row = _new_row(case, warmup, repeats, process)
        runner = None
        try:
            spec = spec_for(case.module, case.shape[3])
            runner = RUNNERS[case.target](spec, inputs[case.size], case.mode, case.layout)
            row["compile_s"] = _time_calls(runner[0], 1)
            for _ in range(warmup):
                runner[0]()
            row["calls_per_round"] = _calls_per_round(runner[0])
        except Unavailable as exc:
            unavailable.append({"module": case.module, "size": case.size, "backend": case.target, "mode": case.mode,
                                "layout": case.layout, "why": str(exc)})
            step()
            continue
        except Exception as exc:  # noqa: BLE001 - one failing case must not stop the run; it is reported
            row["error"], runner = f"{type(exc).__name__}: {exc}"[:300], None
        rows.append(row)
        runners.append(runner)
        step()
    kernel_calls = [_calls_per_round(k.fn) for k in kernels]
    kernel_times = [[] for _ in kernels]
    for _ in range(repeats):
        for k, calls, times in zip(kernels, kernel_calls, kernel_times):
            times.append(_time_calls(k.fn, calls))
        for row, runner in zip(rows, runners):
            if runner is None or row["error"]:
                continue
            try:
                row["times_s"].append(_time_calls(runner[0], row["calls_per_round"]))
            except Exception as exc:  # noqa: BLE001
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        step()
    for row, runner in zip(rows, runners):
        if memory and runner is not None and not row["error"] and row["times_s"]:
            try:
                row["memory_bytes"], row["memory_note"] = runner[1](runner[0])
                row["extra_bytes"] = report.extra_bytes(row)
            except Exception as exc:  # noqa: BLE001
                row["memory_note"] = f"not measured: {type(exc).__name__}: {exc}"[:300]
        if memory:
            step()
    kernel_rows = [{"name": k.name, "process": process, "buffer_bytes": int(kernels[0].bytes_moved // 2),
                    "bytes_moved": k.bytes_moved, "threads": k.threads, "calls_per_round": calls, "times_s": times,
                    **stats(times)} for k, calls, times in zip(kernels, kernel_calls, kernel_times)]
    for k in kernel_rows:
        k["bytes_per_s"] = k["bytes_moved"] / k["median_s"]
    return {"process": process, "rows": rows, "kernels": kernel_rows, "unavailable": unavailable,
            "threads": thread_notes, "llc_bytes": llc, "versions": _versions(frameworks | {"numpy"} | (
                {"timm"} if any(c.target == "timm" for c in todo) else set()))}


def finish(parts, plan: Plan, warmup: int, repeats: int, isolated: bool) -> dict:
    """Merge the parts of a run: the floor from the best kernel, paired ratios, flags, peers, meta."""
    rows = [r for p in parts for r in p["rows"]]
    kernels = [k for p in parts for k in p["kernels"]]
    llc = parts[0]["llc_bytes"]
    best = max(kernels, key=lambda k: k["bytes_per_s"])
    reference = {p["process"]: next(k["times_s"] for k in p["kernels"] if k["name"] == REFERENCE_KERNEL)
                 for p in parts}
    reference_median = statistics.median(reference[best["process"]])  # where the best bandwidth was measured
    for row in rows:
        row["floor_s"] = row["floor_bytes"] / best["bytes_per_s"]
        row["floor_note"] = floor_note(row["shape_nhwc"], llc)
        if row["error"]:
            row["times_s"] = []
            continue
        if not row["times_s"]:
            continue
        row.update(stats(row["times_s"]))
        row["noisy"] = is_noisy(row["median_s"], row["iqr_s"])
        if row["floor_note"] is None:
            # paired: this round's time over this round's floor: the floor scaled by the reference copy of
            # the same round and process against that copy's median in the process of the best kernel
            copies = reference[row["process"]]
            row["ratio_floor"] = statistics.median(
                t / (row["floor_s"] * c / reference_median) for t, c in zip(row["times_s"], copies))
            row["below_floor"] = row["ratio_floor"] < 1.0
    for row in rows:
        peer = matching_peer(row, rows)
        if peer and row["median_s"]:
            row["peer"] = f"{peer['backend']} ({peer['layout']}, {peer['mode']})"
            row["ratio_peer"] = statistics.median(a / b for a, b in zip(row["times_s"], peer["times_s"]))
    threads = {"requested": parts[0]["threads"]["requested"]}
    for p in parts:
        threads.update({k: v for k, v in p["threads"].items() if k != "requested"})
    versions = {}
    for p in parts:
        versions.update({k: v for k, v in p["versions"].items() if v is not None or k not in versions})
    meta = {"sizes": {s: list(SIZES[s]) for s in plan.sizes}, "dtype": "float32", "device": "cpu",
            "modes": plan.modes, "threads": threads, "memory_system": _memory_system(),
            "processes": {"isolated": isolated, "order": [p["process"] for p in parts]},
            "bandwidth": {"buffer_bytes": best["buffer_bytes"], "llc_bytes": llc, "best": best["name"],
                          "best_process": best["process"], "bytes_per_s": best["bytes_per_s"],
                          "reference": REFERENCE_KERNEL, "reference_median_s": reference_median,
                          "kernels": kernels},
            "peers": plan.peers, "peers_skipped": plan.peers_skipped,
            "unavailable": [u for p in parts for u in p["unavailable"]],
            "warmup": warmup, "repeats": repeats, "passes": PASSES, "noisy_iqr": NOISY_IQR, "versions": versions}
    return {"meta": meta, "rows": rows}


def _worker_command(request_path, result_path, fd):
    return [sys.executable, "-m", "attnport.bench.worker", request_path, result_path, str(fd)]


def _run_worker(framework, todo, sizes, warmup, repeats, threads, memory, step) -> dict:
    """``measure`` in a fresh process that loads only ``framework``; its steps come back through a pipe."""
    root = str(pathlib.Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory(prefix="attnport-bench-") as tmp:
        request_path, result_path = os.path.join(tmp, "request.json"), os.path.join(tmp, "result.json")
        pathlib.Path(request_path).write_text(json.dumps({
            "process": framework, "cases": [dataclasses.asdict(c) for c in todo], "sizes": sizes, "warmup": warmup,
            "repeats": repeats, "threads": threads, "memory": memory}))
        read_fd, write_fd = os.pipe()
        proc = subprocess.Popen(_worker_command(request_path, result_path, write_fd), pass_fds=(write_fd,), env=env,
                                stdin=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as steps:
            for _ in iter(lambda: steps.read(1), b""):
                step()
        rc = proc.wait()
        if rc == 0 and os.path.exists(result_path):
            return json.loads(pathlib.Path(result_path).read_text())
    raise BenchError(f"the {framework} worker process failed (exit status {rc}); its stderr is above")


def worker_main(request_path, result_path, fd) -> int:
    """The worker process's side of ``_run_worker`` (``python -m attnport.bench.worker``)."""
    request = json.loads(pathlib.Path(request_path).read_text())
    todo = [Case(**{**c, "shape": tuple(c["shape"])}) for c in request["cases"]]
    with os.fdopen(int(fd), "wb", buffering=0) as steps:
        part = measure(todo, request["sizes"], request["warmup"], request["repeats"], request["threads"],
                       request["memory"], lambda: steps.write(b"."), request["process"])
    pathlib.Path(result_path).write_text(json.dumps(part))
    return 0


def run_bench(sizes=None, backends=None, modules=None, modes=None, peers=True, warmup=3, repeats=10,
              threads=None, memory=True, progress=None, isolate=False) -> dict:
    """Run every case; returns ``{"meta": {...}, "rows": [...]}`` (the JSON `attnport bench --json` prints).

    Every case and the bandwidth kernels are timed in interleaved rounds, so that a slow spell of the machine
    hits every case of a round alike; with ``isolate`` each framework's cases (and kernels) run in a process
    of their own, and the ratios to the floor are paired through each process's own copy.
    """
    plan = resolve(sizes, backends, modules, modes, peers)
    if warmup < 0 or repeats < 1 or (threads is not None and threads < 1):
        raise BenchError("need warmup >= 0, repeats >= 1 and threads >= 1")
    todo = cases(plan)
    if not todo:
        raise BenchError("nothing to run: fast_inference is a torch mode, and no torch backend was asked for")
    step = progress or (lambda: None)
    groups = _groups(todo)
    isolated = bool(isolate)
    if isolated:
        parts = [_run_worker(fw, group, plan.sizes, warmup, repeats, threads, memory, step)
                 for fw, group in groups.items()]
    else:
        parts = [measure(todo, plan.sizes, warmup, repeats, threads, memory, step, "+".join(groups))]
    return finish(parts, plan, warmup, repeats, isolated)


def _versions(packages) -> dict:
    out = {}
    for p in sorted(packages):
        module = sys.modules.get(p)
        out[p] = getattr(module, "__version__", None) if module else None
    return out

