"""Do TensorFlow's and JAX's thread pools, loaded in the same process, disturb torch's timings?

    python -m attnport.bench.noise [--rounds 60] [--size small] [--json]

Three worker processes stay up side by side, each timing torch eager SE (torch_impl's and timm's, back-to-back
calls for about ``BATCH_S``, under ``torch.inference_mode()``, at the bench's thread count) whenever the parent
asks:

- ``torch``: torch alone in its process;
- ``idle``: TensorFlow and JAX imported and run once (their thread pools started), then left idle;
- ``busy``: a TensorFlow and a JAX SE call (XLA) just before every torch timing, as in a bench run that
  interleaves every framework's cases in one process.

The parent asks them in turn, round after round (the order rotating), so that the three measurements of a
round lie within a fraction of a second and a slow spell of a shared machine hits them alike. Reported per
kind: the median time and IQR / median over the rounds, and the paired ratio to the ``torch`` worker
(median over rounds of this round's time / the torch worker's), over all rounds and over the quiet ones
(other processes kept less than ``QUIET`` of the machine busy while the round ran). The result is recorded
in benchmarks/README.md ("Noise").
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

KINDS = ("torch", "idle", "busy")
QUIET = 0.15  # a round during which other processes kept under 15 % of the machine busy
BATCH_S = 0.03  # each worker times a case for about this long per round


def _cpu_sample(pids):
    """(busy seconds of the whole machine, CPU seconds of ``pids`` and this process, wall seconds), from
    /proc/stat and /proc/PID/stat (in clock ticks: 10 ms at 100 Hz, hence rounds of about 0.1 s or more)."""
    hz = os.sysconf("SC_CLK_TCK")
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
    mine = 0
    for pid in pids:
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        mine += int(stat[11]) + int(stat[12])  # utime, stime
    t = os.times()
    return busy / hz, mine / hz + t.user + t.system, time.perf_counter()


def _others_load(before, after) -> float:
    """The share of the machine other processes kept busy between two samples."""
    busy, mine, wall = (a - b for a, b in zip(after, before))
    return max(0.0, busy - mine) / (wall * os.cpu_count())


def worker(kind: str, size: str) -> None:
    """Serve timings: one JSON line on stdout per line read from stdin."""
    import numpy as np

    from .. import quiet
    from .core import SIZES, configure_threads, spec_for

    configure_threads(None, {"torch"} if kind == "torch" else {"torch", "tensorflow", "jax"})
    import torch
    from timm.layers import SEModule

    import torch_impl

    shape = SIZES[size]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    spec = spec_for("SE", shape[3])
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    cases = {"torch_impl SE": torch_impl.build(spec, seed=0),
             "timm SE": SEModule(spec.channels, rd_channels=spec.reduced_channels).eval()}
    others = []
    if kind != "torch":
        with quiet.filtered_stderr():
            import jax
            from flax import nnx

            import jax_impl
            import tensorflow as tf
            import tf_impl
        layer = tf_impl.build(spec, seed=0)
        xf = tf.constant(x)
        tf_call = tf.function(lambda t: layer(t, training=False), jit_compile=True)
        graphdef, state = nnx.split(jax_impl.build(spec, seed=0))
        jf = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
        xj = jax.numpy.asarray(x)
        others = [lambda: tf_call(xf).numpy(), lambda: jf(state, xj).block_until_ready()]
        for f in others:
            f()
    calls = {}
    with torch.inference_mode():
        for name, m in cases.items():
            single = []
            for _ in range(21):
                start = time.perf_counter()
                m(xt)
                single.append(time.perf_counter() - start)
            calls[name] = max(1, min(200, round(BATCH_S / statistics.median(single))))
        print(json.dumps({"ready": kind, "calls": calls}), flush=True)
        for _ in sys.stdin:
            if kind == "busy":
                for f in others:
                    f()
            times = {}
            for name, m in cases.items():
                start = time.perf_counter()
                for _ in range(calls[name]):
                    m(xt)
                times[name] = (time.perf_counter() - start) / calls[name]
            print(json.dumps({"times_s": times}), flush=True)


def _summary(rounds, names) -> dict:
    out = {}
    for kind in KINDS:
        out[kind] = {}
        for name in names:
            t = [r[kind]["times_s"][name] for r in rounds]
            q1, q3 = statistics.quantiles(t, n=4)[0], statistics.quantiles(t, n=4)[2]
            med = statistics.median(t)
            out[kind][name] = {"median_us": med * 1e6, "iqr_over_median": (q3 - q1) / med,
                               "ratio_to_torch": statistics.median(r[kind]["times_s"][name]
                                                                   / r["torch"]["times_s"][name] for r in rounds)}
    return out


def run(rounds: int = 60, size: str = "small") -> dict:
    procs = {kind: subprocess.Popen([sys.executable, "-m", "attnport.bench.noise", "--worker", kind, "--size", size],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for kind in KINDS}
    try:
        for p in procs.values():
            json.loads(p.stdout.readline())
        pids = [p.pid for p in procs.values()]
        log = []
        for i in range(rounds):
            entry, before = {}, _cpu_sample(pids)
            for kind in KINDS[i % 3:] + KINDS[:i % 3]:
                procs[kind].stdin.write("go\n")
                procs[kind].stdin.flush()
                entry[kind] = json.loads(procs[kind].stdout.readline())
            entry["others"] = _others_load(before, _cpu_sample(pids))
            log.append(entry)
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    names = list(log[0]["torch"]["times_s"])
    quiet_rounds = [r for r in log if r["others"] < QUIET]
    return {"size": size, "rounds": rounds, "threads": len(os.sched_getaffinity(0)), "log": log,
            "all": _summary(log, names), "quiet_rounds": len(quiet_rounds),
            "quiet": _summary(quiet_rounds, names) if len(quiet_rounds) >= 4 else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnport.bench.noise", description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--size", default="small")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.size)
        return 0
    result = run(args.rounds, args.size)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for group in ("all", "quiet"):
        if result[group] is None:
            continue
        n = result["rounds"] if group == "all" else result["quiet_rounds"]
        print(f"{group} rounds ({n}):")
        for kind, cases in result[group].items():
            print(f"  {kind}: " + "; ".join(
                f"{name} median {c['median_us']:.0f} us, IQR/median {c['iqr_over_median']:.2f}, "
                f"{c['ratio_to_torch']:.2f}x the torch-only process" for name, c in cases.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
