"""What a fresh output costs: writing a large tensor into new memory vs into memory already touched.

    python -m attnport.bench.first_touch [--json]
    THP_MEM_ALLOC_ENABLE=1 GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python -m attnport.bench.first_touch

The measurement behind docs/how-to/pick-a-backend.md: on the benchmark machine the kernel's page faults on a
fresh 103 MB output cost several times the write itself, which is what the modules' times are made of.
Each case is ``y = 2 * x`` on the large bench tensor (float32, 32x56x56x256), median of interleaved rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from .core import SIZES, configure_threads


def cases(x: np.ndarray) -> dict:
    pre = np.empty_like(x)
    out = {"numpy, into a preallocated array": lambda: np.multiply(x, 2.0, out=pre),
           "numpy, new array": lambda: np.multiply(x, 2.0)}
    import torch

    from torch_impl.fast import fresh_like

    xt = torch.from_numpy(x)
    prt = torch.empty_like(xt).zero_()
    out["torch, into a preallocated tensor"] = lambda: torch.mul(xt, 2.0, out=prt)
    out["torch, new tensor (torch's allocator)"] = lambda: xt * 2.0
    out["torch, new tensor with huge pages (torch_impl.fast.fresh_like)"] = lambda: torch.mul(
        xt, 2.0, out=fresh_like(xt))
    import tensorflow as tf

    xf = tf.constant(x)
    double = tf.function(lambda t: t * 2.0, jit_compile=True)
    out["tensorflow XLA, new tensor"] = lambda: double(xf).numpy()
    import jax
    import jax.numpy as jnp

    xj = jnp.asarray(x)
    jdouble = jax.jit(lambda t: t * 2.0)
    out["jax.jit, new array"] = lambda: jdouble(xj).block_until_ready()
    return out


def run(rounds: int = 11) -> dict:
    threads = configure_threads(None, {"torch", "tensorflow", "jax"})
    x = np.random.default_rng(0).standard_normal(SIZES["large"], dtype=np.float32)
    todo = cases(x)
    times = {name: [] for name in todo}
    for fn in todo.values():
        fn()
        fn()
    for _ in range(rounds):
        for name, fn in todo.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {"tensor_bytes": x.nbytes, "threads": threads,
            "env": {k: os.environ.get(k) for k in ("THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES")},
            "median_ms": {name: statistics.median(t) * 1e3 for name, t in times.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnport.bench.first_touch", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args(argv)
    result = run(args.rounds)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"y = 2 * x, {result['tensor_bytes'] / 1e6:.0f} MB float32; env {result['env']}")
    table.add_column("case")
    table.add_column("median ms", justify="right")
    for name, ms in result["median_ms"].items():
        table.add_row(name, f"{ms:.1f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
