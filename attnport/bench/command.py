"""The `attnport bench` subcommand: its arguments and its run. Only argparse is imported until it runs."""
from __future__ import annotations

import sys

SIZE_CHOICES = ("tiny", "small", "medium", "large")  # core.SIZES, kept here so parsing imports no framework
MODE_CHOICES = ("eager", "fast_inference", "compiled")  # core.MODES


def add_parser(sub):
    bench = sub.add_parser("bench", help="time every module x backend x mode against peers and the bandwidth floor",
                           description="Timing on the CPU, float32. Sizes (N, H, W, C): tiny 2x8x8x32, small 8x14x14x64, "
                                       "medium 32x28x28x128, large 32x56x56x256. Modes: eager (the default forward), "
                                       "fast_inference (torch_impl's opt-in CPU inference method, torch only), "
                                       "compiled (torch.compile, tf.function(jit_compile=True), jax.jit). Speed is "
                                       "quoted as ratios (to the floor, to the matching peer) measured in one run.")
    bench.add_argument("--size", action="append", choices=SIZE_CHOICES, help="repeatable; default: small")
    bench.add_argument("--backend", action="append", help="torch, tf or jax (repeatable); default: all installed")
    bench.add_argument("--module", action="append",
                       help="SE, SE.timm, ECA, ECA.timm, CBAM, CBAM.timm (repeatable); default: all")
    bench.add_argument("--mode", action="append", choices=MODE_CHOICES, help="repeatable; default: all three")
    bench.add_argument("--no-peers", action="store_true", help="skip timm / torchvision / Keras peers")
    bench.add_argument("--warmup", type=int, default=3, help="untimed calls after the first (default 3)")
    bench.add_argument("--repeats", type=int, default=10, help="timed rounds: each times every case once (default 10)")
    bench.add_argument("--threads", type=int, default=None,
                       help="threads for every framework (default: the CPUs this process may use)")
    bench.add_argument("--isolate", action="store_true",
                       help="time each framework in a process of its own (default: all in this process)")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    bench.add_argument("--quick", action="store_true",
                       help="smoke run: size tiny (unless --size is given), no warm-up, 1 round; proves the command, "
                            "not the speed")
    bench.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    bench.add_argument("--plot", metavar="FILE.png", help="also write a bar chart of the ratio to the floor")
    bench.set_defaults(run=run)
    return bench


def run(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from . import report
    from .core import BenchError, count_steps, resolve, run_bench

    if args.quick:
        args.size, args.warmup, args.repeats = args.size or ["tiny"], 0, 1
    request = dict(sizes=args.size, backends=args.backend, modules=args.module, modes=args.mode,
                   peers=not args.no_peers)
    isolate = args.isolate
    try:
        plan = resolve(**request)
        for peer, why in plan.peers_skipped.items():
            print(f"attnport bench: peer {peer} skipped: {why}", file=sys.stderr)
        total = count_steps(plan, args.repeats, not args.no_memory, isolate)
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("benchmarking", total=total)
            result = run_bench(**request, warmup=args.warmup, repeats=args.repeats, threads=args.threads,
                               memory=not args.no_memory, progress=lambda: progress.advance(task), isolate=isolate)
    except BenchError as exc:
        print(f"attnport: {exc}", file=sys.stderr)
        return 2
    left_out = {}
    for u in result["meta"]["unavailable"]:
        left_out.setdefault((u["backend"], u["mode"], u["why"]), []).append(u)
    for (backend, mode, why), group in left_out.items():
        print(f"attnport bench: left out {backend} {mode} ({len(group)} cases): {why}", file=sys.stderr)
    if args.json:
        print(report.to_json(result))
    else:
        report.print_table(result, Console() if sys.stdout.isatty() else Console(width=200))
    if args.plot:
        report.plot(result, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    failed = [r for r in result["rows"] if r["error"]]
    if failed:
        print(f"{len(failed)} of {len(result['rows'])} cases failed (see the error column / field)", file=sys.stderr)
    return 1 if failed else 0
