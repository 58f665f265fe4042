"""`attnport bench` machinery: JSON structure, the floor, the flags, peer matching, the CLI, clean stderr.

Speed is never asserted: only that times exist, are positive and finite, and that the floor, the ratios and
the flags follow from the measured (or, on a synthetic run, the given) times. The measured runs are small:
SE in torch on a tiny tensor, one `--quick` run through the CLI with torch and TF, one with `--isolate`.
"""
import json
import math

import pytest

from attnport.bench import core as bench
from attnport.bench import report
from attnport.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = (2, 4, 4, 16)  # N, H, W, C
LARGE_BYTES = math.prod(bench.SIZES["large"]) * 4
ROW_FIELDS = {"module", "kind", "spec", "size", "shape_nhwc", "backend", "framework", "process", "is_peer", "mode",
              "layout", "floor_bytes", "floor_s", "floor_note", "warmup", "repeats", "calls_per_round", "median_s",
              "iqr_s", "noisy", "times_s", "compile_s", "ratio_floor", "below_floor", "peer", "ratio_peer",
              "memory_bytes", "extra_bytes", "memory_note", "error"}
NOISE_MARKERS = ("USDT", "profiler_start", "profiler_stop", "gpuGetDeviceCount", "absl::InitializeLog", "cuInit",
                 "oneDNN custom operations", "No CUDA runtime")


def _has_fast_inference() -> bool:
    import torch_impl

    return hasattr(torch_impl.SEBlock, "fast_inference")


@pytest.fixture(scope="module", autouse=True)
def small_cache():
    """A 1 MiB last-level cache for every run here, worker processes too: the floor's buffer is 4 x the LLC,
    and this VM's sysfs reports the host's 480 MiB cache (a 1.9 GB buffer, 10 s a run). Speed is never
    asserted, so the buffer's size changes nothing the tests check."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(bench.LLC_ENV, str(1 << 20))
        yield


def test_the_cache_override_is_read_and_checked(monkeypatch):
    monkeypatch.setenv(bench.LLC_ENV, "12345")
    assert bench.last_level_cache_bytes() == 12345
    monkeypatch.setenv(bench.LLC_ENV, "lots")
    with pytest.raises(bench.BenchError, match="ATTNPORT_LLC_BYTES='lots'"):
        bench.last_level_cache_bytes()


@pytest.fixture(scope="module")
def result():
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(bench.SIZES, "tiny", TINY)
        out = bench.run_bench(sizes=["tiny"], backends=["torch"], modules=["SE"], modes=["eager", "fast_inference"],
                              peers=["timm"], warmup=1, repeats=2)
    return json.loads(report.to_json(out))  # what --json prints, round-tripped


def test_json_structure(result):
    meta, rows = result["meta"], result["rows"]
    assert {"sizes", "dtype", "device", "modes", "threads", "processes", "bandwidth", "peers", "peers_skipped",
            "unavailable", "warmup", "repeats", "passes", "noisy_iqr", "versions"} <= set(meta)
    assert meta["sizes"] == {"tiny": list(TINY)} and meta["warmup"] == 1 and meta["repeats"] == 2
    assert meta["threads"]["torch"]["intra_op"] == meta["threads"]["requested"]
    assert meta["processes"] == {"isolated": False, "order": ["torch"]}  # one framework: no worker process
    expected = [("timm", "eager", "channels_last"), ("timm", "eager", "nchw"), ("torch", "eager", "channels_last"),
                ("torch", "eager", "nchw")]
    if _has_fast_inference():
        expected += [("torch", "fast_inference", "channels_last"), ("torch", "fast_inference", "nchw")]
    else:
        assert {u["mode"] for u in meta["unavailable"]} == {"fast_inference"}
    assert sorted((r["backend"], r["mode"], r["layout"]) for r in rows) == sorted(expected)
    for r in rows:
        assert set(r) == ROW_FIELDS
        assert r["error"] is None, r["error"]
        assert r["module"] == "SE" and r["kind"] == "se" and r["shape_nhwc"] == list(TINY) and r["process"] == "torch"
        for key in ("median_s", "compile_s", "floor_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
        assert math.isfinite(r["iqr_s"]) and r["iqr_s"] >= 0
        assert r["noisy"] == (r["iqr_s"] > bench.NOISY_IQR * r["median_s"])
        assert len(r["times_s"]) == 2 and min(r["times_s"]) <= r["median_s"] <= max(r["times_s"])
        assert 1 <= r["calls_per_round"] <= bench.MAX_CALLS_PER_ROUND
        assert isinstance(r["memory_bytes"], int) and r["memory_bytes"] >= 0 and r["memory_note"]
        # extra = what the profiler saw beyond the output (SE keeps only O(N*C) besides it)
        assert r["extra_bytes"] == max(0, r["memory_bytes"] - math.prod(TINY) * 4)
        assert r["is_peer"] == (r["backend"] == "timm")


def test_measured_floor_is_the_best_kernel(result):
    bw = result["meta"]["bandwidth"]
    assert {k["name"] for k in bw["kernels"]} == {"numpy copy", "numpy sum", "torch copy_", "torch sum"}
    assert bw["buffer_bytes"] >= 4 * bw["llc_bytes"]  # streams from memory, not from the cache
    for k in bw["kernels"]:
        copies = 2 if "copy" in k["name"] else 1  # a copy reads and writes its buffer
        assert k["bytes_moved"] == copies * bw["buffer_bytes"] and k["process"] == "torch"
        assert k["threads"] == (1 if k["name"].startswith("numpy") else result["meta"]["threads"]["requested"])
        assert len(k["times_s"]) == 2 and k["bytes_per_s"] == pytest.approx(k["bytes_moved"] / k["median_s"])
    best = max(bw["kernels"], key=lambda k: k["bytes_per_s"])
    assert (bw["best"], bw["bytes_per_s"]) == (best["name"], best["bytes_per_s"])
    for r in result["rows"]:
        assert r["floor_bytes"] == 3 * math.prod(TINY) * 4  # SE: pool, read, write
        assert r["floor_s"] == pytest.approx(r["floor_bytes"] / bw["bytes_per_s"])
        # a tiny tensor fits in the last-level cache: it has no memory floor, and the row says why
        assert r["ratio_floor"] is None and not r["below_floor"] and "last-level cache" in r["floor_note"]
    assert bench.floor_bytes("cbam", TINY) == 4 * math.prod(TINY) * 4


def test_backend_rows_are_compared_with_the_peer_in_the_same_layout(result):
    peers = {r["layout"]: r for r in result["rows"] if r["is_peer"]}
    for r in result["rows"]:
        if r["is_peer"]:
            assert r["peer"] is None and r["ratio_peer"] is None
        else:
            assert r["peer"] == f"timm ({r['layout']}, eager)"  # fast_inference is compared with timm's eager
            # paired: the median over rounds of this round's time / the peer's time in the same round
            per_round = sorted(a / b for a, b in zip(r["times_s"], peers[r["layout"]]["times_s"]))
            assert len(per_round) == 2 and r["ratio_peer"] == pytest.approx((per_round[0] + per_round[1]) / 2)


# ------------------------------------------------------------------------------------------ synthetic runs

def _kernel(name, process, bytes_moved, times):
    out = {"name": name, "process": process, "buffer_bytes": 128 << 20, "bytes_moved": bytes_moved, "threads": 2,
           "calls_per_round": 1, "times_s": list(times), **bench.stats(times)}
    return {**out, "bytes_per_s": bytes_moved / out["median_s"]}


def _timed(module, target, mode, layout, times, process, size="large"):
    case = bench.Case(module, size, bench.SIZES[size], target, mode, layout, target in bench.PEERS)
    row = bench._new_row(case, 0, len(times), process)
    return {**row, "times_s": list(times), "calls_per_round": 1, "compile_s": 0.1}


def _part(process, rows, kernels):
    return {"process": process, "rows": rows, "kernels": kernels, "unavailable": [], "threads": {"requested": 2},
            "llc_bytes": 32 << 20, "versions": {}}


def _synthetic_run():
    """Two processes: torch (normal machine), tensorflow (the machine twice as slow: its copy takes twice as long)."""
    buffer = 128 << 20
    torch_kernels = [_kernel("numpy copy", "torch", 2 * buffer, [0.0134] * 3),
                     _kernel("numpy sum", "torch", buffer, [0.0100] * 3),
                     _kernel("torch copy_", "torch", 2 * buffer, [0.0110, 0.0112, 0.0114]),  # the best: 24 GB/s
                     _kernel("torch sum", "torch", buffer, [0.0090] * 3)]
    tf_kernels = [_kernel("numpy copy", "tensorflow", 2 * buffer, [0.0268] * 3),
                  _kernel("numpy sum", "tensorflow", buffer, [0.0200] * 3)]
    torch_rows = [_timed("SE", "torch", "eager", "nchw", [0.020] * 3, "torch"),
                  _timed("SE", "torch", "fast_inference", "nchw", [0.010] * 3, "torch"),          # beats the floor
                  _timed("SE", "torch", "compiled", "nchw", [0.020, 0.021, 0.060], "torch"),      # noisy
                  _timed("SE", "timm", "eager", "nchw", [0.025] * 3, "torch"),
                  _timed("SE", "torch", "eager", "nchw", [1e-4] * 3, "torch", size="small")]       # fits in cache
    tf_rows = [_timed("SE", "tf", "eager", "nhwc", [0.040] * 3, "tensorflow"),
               _timed("SE", "keras", "eager", "nhwc", [0.050] * 3, "tensorflow")]
    plan = bench.Plan(["large", "small"], ["torch", "tf"], ["SE"], list(bench.MODES), ["timm", "keras"],
                      {"torchvision": "torchvision is not installed"})
    parts = [_part("torch", torch_rows, torch_kernels), _part("tensorflow", tf_rows, tf_kernels)]
    return bench.finish(parts, plan, warmup=0, repeats=3, isolated=True)


def _find(run, backend, mode, size="large"):
    return next(r for r in run["rows"] if (r["backend"], r["mode"], r["size"]) == (backend, mode, size))


def test_floor_on_a_synthetic_run():
    run = _synthetic_run()
    bw = run["meta"]["bandwidth"]
    # the best kernel is chosen: torch copy_, its 2 x 128 MiB over its median time
    assert (bw["best"], bw["best_process"]) == ("torch copy_", "torch")
    best = 2 * (128 << 20) / 0.0112
    assert bw["bytes_per_s"] == pytest.approx(best)
    eager = _find(run, "torch", "eager")
    # floor = passes x tensor bytes / best bandwidth, the copy counted as 2 x its buffer
    assert eager["floor_s"] == pytest.approx(3 * LARGE_BYTES / best)
    assert eager["ratio_floor"] == pytest.approx(0.020 / eager["floor_s"]) and not eager["below_floor"]
    # paired through each process's copy: TF ran while the copy took twice as long, so its floor doubles
    tf = _find(run, "tf", "eager")
    assert tf["ratio_floor"] == pytest.approx(0.040 / (2 * tf["floor_s"]))
    # a result that beats the floor is flagged, and every report says so instead of printing the ratio
    fast = _find(run, "torch", "fast_inference")
    assert fast["ratio_floor"] < 1 and fast["below_floor"] and not eager["below_floor"]
    text = report.markdown(run)
    assert f"({report.BELOW_FLOOR}" in text and "x floor" in text
    assert report.floor_text(fast) == report.BELOW_FLOOR
    # a tensor whose input and output fit in the last-level cache has no floor
    small = _find(run, "torch", "eager", size="small")
    assert small["ratio_floor"] is None and "last-level cache" in small["floor_note"] and not small["below_floor"]
    assert "10.0 ms (below floor: floor wrong" in text and "0.1 ms (no floor" in text
    # the floor target is not met on a wrong floor
    floor_target = next(t for t in report.targets(run) if t["target"] == "torch best mode / floor, SE/ECA")
    assert floor_target["met"] is None and "floor wrong" in report.targets_markdown(run)


def test_noisy_cases_are_flagged():
    run = _synthetic_run()
    compiled = _find(run, "torch", "compiled")
    assert compiled["iqr_s"] > 0.3 * compiled["median_s"] and compiled["noisy"]
    assert not _find(run, "torch", "eager")["noisy"]
    assert "noisy (IQR" in report.markdown(run) and report.noise_text(compiled).startswith("noisy (IQR ")


def test_report_prints_the_flags(capsys):
    from rich.console import Console

    run = _synthetic_run()
    report.print_table(run, Console(width=400, force_terminal=False))
    out = capsys.readouterr().out
    assert report.BELOW_FLOOR in out and "noisy" in out and "no floor" in out
    assert "targets, read from this run" in out and "issue" not in out.lower()
    assert "peer torchvision skipped: torchvision is not installed" in out


def test_peers_match_within_a_framework():
    def row(backend, module="SE", mode="eager", layout="nhwc", is_peer=False):
        return {"backend": backend, "module": module, "kind": module.split(".")[0].lower(), "mode": mode,
                "layout": layout, "size": "large", "is_peer": is_peer, "median_s": 1.0}

    rows = [row("timm", m, mo, lay, True) for m in ("SE", "ECA") for mo in ("eager", "compiled")
            for lay in ("nchw", "nhwc", "channels_last")] + [row("keras", "SE", mo, "nhwc", True)
                                                              for mo in ("eager", "compiled")]
    assert bench.matching_peer(row("tf", "SE"), rows)["backend"] == "keras"        # TF SE -> the Keras block
    assert bench.matching_peer(row("tf", "ECA"), rows) is None                    # TF ECA -> none (no timm)
    assert bench.matching_peer(row("jax", "SE"), rows) is None                    # JAX -> none
    assert bench.matching_peer(row("jax", "ECA", "compiled"), rows) is None
    torch_row = bench.matching_peer(row("torch", "SE", "eager", "channels_last"), rows)
    assert (torch_row["backend"], torch_row["layout"]) == ("timm", "channels_last")
    fast = bench.matching_peer(row("torch", "ECA", "fast_inference", "nchw"), rows)
    assert (fast["backend"], fast["mode"], fast["layout"]) == ("timm", "eager", "nchw")
    assert bench.matching_peer(row("timm", "SE", is_peer=True), rows) is None
    run = _synthetic_run()
    assert _find(run, "tf", "eager")["peer"] == "keras (nhwc, eager)"
    assert _find(run, "tf", "eager")["ratio_peer"] == pytest.approx(0.8)


def test_a_peer_that_is_not_installed_is_skipped_and_said(monkeypatch):
    pytest.importorskip("torch")
    real = bench._installed
    monkeypatch.setattr(bench, "_installed", lambda p: p != "torchvision" and real(p))
    plan = bench.resolve(backends=["torch"])
    assert "torchvision" not in plan.peers
    assert plan.peers_skipped == {"torchvision": "torchvision is not installed"}
    run = _synthetic_run()
    assert run["meta"]["peers_skipped"] == {"torchvision": "torchvision is not installed"}


def test_targets_read_the_worst_case_of_each_scope():
    shape = [2, 16, 16, 64]
    tensor = 2 * 16 * 16 * 64 * 4
    maps = 8 * 2 * (64 + 16 * 16) * 4  # the documented bound on the pooled maps: 8 x N x (C + H x W) floats

    def row(backend, module, mode, layout, median, floor, peer=None, memory=None, size="large", is_peer=False,
            below=False):
        return {"backend": backend, "module": module, "kind": module.split(".")[0].lower(), "mode": mode,
                "layout": layout, "size": size, "median_s": median, "ratio_floor": median / floor,
                "ratio_peer": peer, "memory_bytes": memory, "is_peer": is_peer, "shape_nhwc": shape,
                "below_floor": below}

    rows = [
        row("torch", "SE", "eager", "nchw", 1.6, 1.0, peer=0.9, memory=tensor + 10),
        row("torch", "SE", "eager", "channels_last", 1.7, 1.0, peer=1.1),                # forward/timm 1.1: missed
        row("torch", "SE", "fast_inference", "nchw", 1.2, 1.0, peer=0.7),                # best mode 1.2 <= 1.5
        row("torch", "SE", "compiled", "nchw", 2.08, 1.0, peer=1.0),                     # compiled/eager 1.3: missed
        row("torch", "CBAM", "eager", "nchw", 2.5, 1.0, peer=1.0, memory=3 * tensor),    # 2 extra tensors: missed
        row("torch", "CBAM", "eager", "channels_last", 2.5, 1.0, peer=1.0, memory=2 * tensor + maps),  # x*Mc + maps
        row("torch", "CBAM", "fast_inference", "nchw", 2.2, 1.0, peer=0.7),              # 0.7 > 0.6: missed
        row("torch", "CBAM", "compiled", "nchw", 1.9, 1.0, peer=0.8),                    # best mode 1.9 <= 2
        row("timm", "SE", "eager", "nchw", 1.0, 1.0, is_peer=True),                      # peers are not targets
        row("jax", "ECA", "eager", "nhwc", 1.6, 1.0, size="medium"),                     # not large: no floor target
        row("jax", "ECA", "compiled", "nhwc", 1.4, 1.0, size="large"),
    ]
    got = {t["target"]: t for t in report.targets({"rows": rows})}
    forward = got["torch default forward / timm's, SE/ECA"]
    assert forward["measured"] == pytest.approx(1.1) and not forward["met"] and forward["worst"] == \
        "SE large eager channels_last"
    assert got["torch default forward / timm's, CBAM"]["met"]
    assert got["torch fast_inference / timm's eager, SE/ECA"]["met"]
    assert not got["torch fast_inference / timm's eager, CBAM"]["met"]
    assert got["torch fast_inference / timm's eager, CBAM"]["limit"] == 0.6
    assert got["torch best mode / floor, SE/ECA"]["measured"] == pytest.approx(1.2)
    assert got["torch best mode / floor, SE/ECA"]["worst"] == "SE large fast_inference nchw"
    assert got["torch best mode / floor, CBAM"]["measured"] == pytest.approx(1.9)
    assert got["torch best mode / floor, CBAM"]["met"]
    assert got["torch compiled / eager"]["measured"] == pytest.approx(1.3) and not got["torch compiled / eager"]["met"]
    assert got["jax best mode / floor, SE/ECA"]["measured"] == pytest.approx(1.4)
    assert "jax compiled / eager" not in got  # no eager row of the same size to pair with
    memory = got["peak extra memory, in full-size tensors, CBAM"]
    assert memory["measured"] == pytest.approx((2 * tensor - maps) / tensor) and not memory["met"]
    assert memory["worst"] == "CBAM large eager nchw"
    # x*Mc plus the pooled maps is the one full-size temporary CBAM's plain formulation may hold
    assert report.full_size_temporaries(rows[5]) == pytest.approx(1.0)
    assert got["peak extra memory, in full-size tensors, SE/ECA"]["met"]
    assert not any(t["target"].startswith("timm") for t in report.targets({"rows": rows}))
    assert all(t["why"] for t in got.values())
    assert "| torch compiled / eager | every module, layout, size | SE large compiled nchw | 1.30 | 1.05 | **no** |" \
        in report.targets_markdown({"rows": rows})
    for name, _, why in report.TARGET_NOTES:
        assert f"**{name}**" in report.targets_explained() and why


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "bench.png"
    report.plot(_synthetic_run(), path)  # a below-floor bar, a size without a floor
    assert path.read_bytes()[:8] == PNG_SIGNATURE


# ------------------------------------------------------------------------------------------ the command

def test_cli_json_and_plot(tmp_path, capsys):
    pytest.importorskip("torch")
    path = tmp_path / "cli.png"
    assert main(["bench", "--module", "ECA", "--backend", "torch", "--mode", "eager", "--no-peers", "--warmup", "1",
                 "--repeats", "2", "--no-memory", "--json", "--plot", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["backend"], r["layout"]) for r in out["rows"]] == [("torch", "nchw"), ("torch", "channels_last")]
    assert all(r["memory_bytes"] is None and r["median_s"] > 0 for r in out["rows"])
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_quick_through_the_cli(tmp_path, capfd, monkeypatch):
    """`attnport bench --quick` end to end: torch and TF, SE, every mode, the peers (torchvision made "not
    installed"); stderr carries no framework chatter, and says which peer was skipped."""
    real = bench._installed
    for package in ("torch", "tensorflow", "timm"):  # found, not imported: the run itself imports them
        if not real(package):
            pytest.skip(f"{package} is not installed")
    monkeypatch.setattr(bench, "_installed", lambda p: p != "torchvision" and real(p))
    path = tmp_path / "quick.png"
    assert main(["bench", "--quick", "--module", "SE", "--backend", "torch", "--backend", "tf", "--json",
                 "--plot", str(path)]) == 0
    captured = capfd.readouterr()
    out = json.loads(captured.out)
    noise = [line for line in captured.err.splitlines() if any(m in line for m in NOISE_MARKERS)]
    assert noise == [], noise
    assert "attnport bench: peer torchvision skipped: torchvision is not installed" in captured.err
    meta = out["meta"]
    assert meta["peers_skipped"] == {"torchvision": "torchvision is not installed"}
    assert meta["sizes"] == {"tiny": list(bench.SIZES["tiny"])} and meta["warmup"] == 0 and meta["repeats"] == 1
    assert meta["processes"] == {"isolated": False, "order": ["torch+tensorflow"]}
    assert {"transparent_hugepage", "THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES"} == set(meta["memory_system"])
    got = {(r["backend"], r["mode"], r["layout"]) for r in out["rows"]}
    torch_modes = ("eager", "fast_inference", "compiled") if _has_fast_inference() else ("eager", "compiled")
    expected = {("torch", m, lay) for m in torch_modes for lay in ("nchw", "channels_last")}
    expected |= {("timm", m, lay) for m in ("eager", "compiled") for lay in ("nchw", "channels_last")}
    expected |= {(b, m, "nhwc") for b in ("tf", "keras") for m in ("eager", "compiled")}
    assert got == expected
    for r in out["rows"]:
        assert r["error"] is None and len(r["times_s"]) == 1 and r["median_s"] == r["times_s"][0] > 0
        assert r["framework"] == bench.FRAMEWORK[r["backend"]]
        assert (r["ratio_peer"] is not None) == (not r["is_peer"])  # torch -> timm, TF SE -> keras
        if r["backend"] == "tf":
            assert r["peer"].startswith("keras")
    measured = {(r["backend"], r["mode"]) for r in out["rows"] if r["memory_bytes"] is not None}
    assert ("torch", "eager") in measured and ("tf", "eager") not in measured
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_isolate_times_each_framework_in_its_own_process(capfd):
    """`--isolate`: each framework in a worker process (here torch alone), its kernels and rows labelled."""
    if not bench._installed("torch"):
        pytest.skip("torch is not installed")
    assert main(["bench", "--quick", "--isolate", "--module", "ECA", "--backend", "torch", "--mode", "eager",
                 "--no-peers", "--no-memory", "--json"]) == 0
    captured = capfd.readouterr()
    out = json.loads(captured.out)
    assert out["meta"]["processes"] == {"isolated": True, "order": ["torch"]}
    assert {k["process"] for k in out["meta"]["bandwidth"]["kernels"]} == {"torch"}
    assert [(r["backend"], r["layout"], r["process"]) for r in out["rows"]] == [
        ("torch", "nchw", "torch"), ("torch", "channels_last", "torch")]
    assert not [line for line in captured.err.splitlines() if any(m in line for m in NOISE_MARKERS)]


def test_unknown_size_and_backend_are_clear_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--size", "huge"])
    assert exc.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err
    assert main(["bench", "--backend", "mxnet"]) == 2
    assert "unknown backend 'mxnet'; choose from torch, tf, jax" in capsys.readouterr().err
    assert main(["bench", "--module", "GC"]) == 2
    assert "unknown module 'GC'" in capsys.readouterr().err
    with pytest.raises(bench.BenchError, match="unknown size 'huge'; choose from tiny, small, medium, large"):
        bench.run_bench(sizes=["huge"])
    with pytest.raises(bench.BenchError, match="unknown mode 'jit'"):
        bench.resolve(modes=["jit"])
    if bench._installed("tensorflow"):
        with pytest.raises(bench.BenchError, match="fast_inference is a torch mode"):
            bench.run_bench(backends=["tf"], modes=["fast_inference"])


def test_first_touch_measures_every_allocation_case(monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    pytest.importorskip("jax")
    from attnport.bench import first_touch

    monkeypatch.setitem(bench.SIZES, "large", TINY)
    result = first_touch.run(rounds=1)
    assert result["tensor_bytes"] == math.prod(TINY) * 4
    assert set(result["env"]) == {"THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES"}
    assert len(result["median_ms"]) == 7 and all(v > 0 for v in result["median_ms"].values())
