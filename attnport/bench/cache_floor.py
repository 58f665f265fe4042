"""Where a memory floor applies: copy bandwidth against the tensor's size, each copy timed back to back.

    python -m attnport.bench.cache_floor [--rounds 7] [--json]

For every bench size (and a buffer of 4x the last-level cache) a NumPy copy and a torch ``copy_`` (at the
bench's thread count) into a preallocated array, timed as back-to-back calls for about 20 ms per round
(one copy of a small tensor is over before a timer's overhead is), median of ``--rounds`` interleaved
rounds; bandwidth counts a copy as twice the tensor's bytes. A tensor whose copy runs far above the large
buffer's bandwidth is served by the caches: ``core.floor_note`` gives it no memory floor when its input and
output fit in the last-level cache (benchmarks/README.md "Floor").
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np

from .core import SIZES, _time_calls, configure_threads, floor_note, last_level_cache_bytes, LLC_FALLBACK


def run(rounds: int = 7) -> dict:
    threads = configure_threads(None, {"torch"})
    import torch

    llc = last_level_cache_bytes() or LLC_FALLBACK
    buffers = {name: math.prod(shape) * 4 for name, shape in SIZES.items()}
    buffers["4 x last-level cache"] = 4 * llc
    kernels = {}
    for name, nbytes in buffers.items():
        a = np.ones(nbytes // 4, np.float32)
        b = np.empty_like(a)
        np.copyto(b, a)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        # back-to-back calls for about 20 ms at 20 GB/s
        calls = max(1, round(0.02 * 20e9 / (2 * nbytes)))
        kernels[(name, "numpy copy")] = (lambda a=a, b=b: np.copyto(b, a), calls, nbytes)
        kernels[(name, "torch copy_")] = (lambda ta=ta, tb=tb: tb.copy_(ta), calls, nbytes)
    times = {key: [] for key in kernels}
    for _ in range(rounds):
        for key, (fn, calls, _) in kernels.items():
            times[key].append(_time_calls(fn, calls))
    rows = []
    for (name, kernel), (_, calls, nbytes) in kernels.items():
        median = statistics.median(times[(name, kernel)])
        shape = SIZES.get(name)
        rows.append({"buffer": name, "kernel": kernel, "bytes": nbytes, "calls_per_round": calls,
                     "median_s": median, "gb_per_s": 2 * nbytes / median / 1e9,
                     "floor_note": floor_note(shape, llc) if shape else None})
    return {"llc_bytes": llc, "threads": threads, "rounds": rounds, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnport.bench.cache_floor", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.rounds)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for r in result["rows"]:
        print(f"{r['buffer']:>22} {r['bytes'] / 1e6:8.1f} MB  {r['kernel']:<12} x{r['calls_per_round']:<5} "
              f"{r['gb_per_s']:6.1f} GB/s  {'no floor' if r['floor_note'] else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
