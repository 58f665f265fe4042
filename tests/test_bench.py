"""`attnport bench` machinery: JSON structure, the floor formula, the plot, and bad requests.

Speed is never asserted: only that times exist, are positive and finite, and that the floor and the
ratios follow from the measured bandwidth. One module (SE) in torch eager plus the timm peer, on a
tiny tensor, with 1 warm-up and 2 timed calls.
"""
import json
import math

import pytest

from attnport.bench import core as bench
from attnport.bench import report
from attnport.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = (2, 4, 4, 16)  # N, H, W, C
ROW_FIELDS = {"module", "kind", "spec", "size", "shape_nhwc", "backend", "is_peer", "mode", "layout", "floor_bytes",
              "floor_s", "warmup", "repeats", "calls_per_round", "median_s", "iqr_s", "times_s", "compile_s",
              "ratio_floor", "peer", "ratio_peer", "memory_bytes", "extra_bytes", "memory_note", "error"}


@pytest.fixture(scope="module")
def result():
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(bench.SIZES, "tiny", TINY)
        out = bench.run_bench(sizes=["tiny"], backends=["torch"], modules=["SE"], modes=["eager"], peers=["timm"],
                              warmup=1, repeats=2)
    return json.loads(report.to_json(out))  # what --json prints, round-tripped


def test_json_structure(result):
    meta, rows = result["meta"], result["rows"]
    assert {"sizes", "dtype", "device", "threads", "bandwidth", "warmup", "repeats", "passes", "versions"} <= set(meta)
    assert meta["sizes"] == {"tiny": list(TINY)} and meta["warmup"] == 1 and meta["repeats"] == 2
    assert meta["threads"]["torch"]["intra_op"] == meta["threads"]["requested"]
    # torch eager on NCHW and channels_last, and the timm peer on both
    assert sorted((r["backend"], r["layout"]) for r in rows) == [
        ("timm", "channels_last"), ("timm", "nchw"), ("torch", "channels_last"), ("torch", "nchw")]
    for r in rows:
        assert set(r) == ROW_FIELDS
        assert r["error"] is None, r["error"]
        assert r["module"] == "SE" and r["kind"] == "se" and r["mode"] == "eager" and r["shape_nhwc"] == list(TINY)
        for key in ("median_s", "compile_s", "floor_s", "ratio_floor"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
        assert math.isfinite(r["iqr_s"]) and r["iqr_s"] >= 0
        assert len(r["times_s"]) == 2 and min(r["times_s"]) <= r["median_s"] <= max(r["times_s"])
        assert 1 <= r["calls_per_round"] <= bench.MAX_CALLS_PER_ROUND
        assert isinstance(r["memory_bytes"], int) and r["memory_bytes"] >= 0 and r["memory_note"]
        # extra = what the profiler saw beyond the output (SE keeps only O(N*C) besides it)
        assert r["extra_bytes"] == max(0, r["memory_bytes"] - math.prod(TINY) * 4)
        assert r["is_peer"] == (r["backend"] == "timm")


def test_floor_follows_the_measured_bandwidth(result):
    bw = result["meta"]["bandwidth"]
    n, h, w, c = TINY
    tensor_bytes = n * h * w * c * 4  # float32
    # NOTES §11's convention: copy bandwidth = the tensor's bytes per copy time, so floor = passes x copy time
    assert bw["bytes_moved"] == bw["tensor_bytes"] == tensor_bytes
    assert bw["bytes_per_s"] == pytest.approx(tensor_bytes / bw["median_s"])
    assert len(bw["times_s"]) == 2 and bw["median_s"] == pytest.approx(sum(bw["times_s"]) / 2)
    for r in result["rows"]:
        assert r["floor_bytes"] == 3 * tensor_bytes  # SE: pool, read, write
        assert r["floor_s"] == pytest.approx(3 * bw["median_s"])
        assert r["ratio_floor"] == pytest.approx(r["median_s"] / r["floor_s"])
    assert bench.floor_bytes("cbam", TINY) == 4 * tensor_bytes


def test_backend_rows_are_compared_with_the_peer_in_the_same_layout(result):
    peers = {r["layout"]: r for r in result["rows"] if r["is_peer"]}
    for r in result["rows"]:
        if r["is_peer"]:
            assert r["peer"] is None and r["ratio_peer"] is None
        else:
            assert r["peer"] == f"timm ({r['layout']})"
            # paired: the median over rounds of this round's time / the peer's time in the same round
            per_round = sorted(a / b for a, b in zip(r["times_s"], peers[r["layout"]]["times_s"]))
            assert len(per_round) == 2 and r["ratio_peer"] == pytest.approx((per_round[0] + per_round[1]) / 2)


def test_plot_writes_a_png(result, tmp_path):
    path = tmp_path / "bench.png"
    report.plot(result, path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_cli_json_and_plot(tmp_path, capsys):
    pytest.importorskip("torch")
    path = tmp_path / "cli.png"
    assert main(["bench", "--module", "ECA", "--backend", "torch", "--mode", "eager", "--no-peers", "--warmup", "1",
                 "--repeats", "2", "--no-memory", "--json", "--plot", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["backend"], r["layout"]) for r in out["rows"]] == [("torch", "nchw"), ("torch", "channels_last")]
    assert all(r["memory_bytes"] is None and r["median_s"] > 0 for r in out["rows"])
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_quick_runs_every_backend_mode_and_peer(tmp_path, capsys):
    """`--quick` (what CI runs): size tiny, 1 round; every installed backend in both modes, with peers."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    pytest.importorskip("flax")
    pytest.importorskip("timm")
    pytest.importorskip("torchvision")
    path = tmp_path / "quick.png"
    assert main(["bench", "--quick", "--module", "SE", "--json", "--plot", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["meta"]["sizes"] == {"tiny": list(bench.SIZES["tiny"])}
    assert out["meta"]["warmup"] == 0 and out["meta"]["repeats"] == 1
    assert {"transparent_hugepage", "THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES"} == set(out["meta"]["memory_system"])
    got = {(r["backend"], r["mode"], r["layout"]) for r in out["rows"]}
    expected = {(b, m, lay) for b in ("torch", "timm", "torchvision") for m in ("eager", "compiled")
                for lay in ("nchw", "channels_last")}
    expected |= {(b, m, "nhwc") for b in ("tf", "keras", "jax") for m in ("eager", "compiled")}
    assert got == expected
    for r in out["rows"]:
        assert r["error"] is None and len(r["times_s"]) == 1 and r["median_s"] == r["times_s"][0] > 0
        assert (r["ratio_peer"] is not None) == (not r["is_peer"])
    measured = {(r["backend"], r["mode"]) for r in out["rows"] if r["memory_bytes"] is not None}
    assert ("torch", "eager") in measured and ("jax", "compiled") in measured and ("tf", "eager") not in measured
    assert path.read_bytes()[:8] == PNG_SIGNATURE


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


def _row(backend, module, mode, layout, median, floor, peer=None, memory=None, size="large", is_peer=False):
    kind = module.split(".")[0].lower()
    return {"backend": backend, "module": module, "kind": kind, "mode": mode, "layout": layout, "size": size,
            "median_s": median, "ratio_floor": median / floor, "ratio_peer": peer, "memory_bytes": memory,
            "is_peer": is_peer, "shape_nhwc": [2, 4, 4, 8]}


def test_targets_read_the_worst_case_of_each_scope():
    tensor = 2 * 4 * 4 * 8 * 4
    rows = [
        _row("torch", "SE", "eager", "nchw", 1.0, 1.0, peer=0.9, memory=tensor + 10),
        _row("torch", "SE", "eager", "channels_last", 1.2, 1.0, peer=1.1),          # worst torch/timm: 1.1, missed
        _row("torch", "SE", "compiled", "nchw", 1.3, 1.0, peer=1.0),                # compiled/eager 1.3, missed
        _row("torch", "CBAM", "eager", "nchw", 2.5, 1.0, peer=0.5, memory=3 * tensor),  # 2 extra tensors, missed
        _row("torch", "CBAM", "compiled", "nchw", 1.9, 1.0, peer=0.8),              # best mode 1.9 <= 2
        _row("timm", "SE", "eager", "nchw", 1.0, 1.0, is_peer=True),                # peers are not targets
        _row("jax", "ECA", "eager", "nhwc", 1.6, 1.0, size="medium"),               # not large: no floor target
        _row("jax", "ECA", "compiled", "nhwc", 1.4, 1.0, size="large"),
    ]
    got = {t["target"]: t for t in report.targets({"rows": rows})}
    assert got["torch eager time / timm's, SE/ECA"]["measured"] == pytest.approx(1.1)
    assert not got["torch eager time / timm's, SE/ECA"]["met"]
    assert got["torch eager time / timm's, CBAM"]["met"] and got["torch eager time / timm's, CBAM"]["limit"] == 0.6
    assert got["torch best mode / floor, SE/ECA"]["measured"] == pytest.approx(1.0)
    assert got["torch best mode / floor, CBAM"]["measured"] == pytest.approx(1.9)
    assert got["torch best mode / floor, CBAM"]["met"]
    assert got["torch compiled / eager"]["measured"] == pytest.approx(1.3) and not got["torch compiled / eager"]["met"]
    assert got["jax best mode / floor, SE/ECA"]["measured"] == pytest.approx(1.4)
    assert "jax compiled / eager" not in got  # no eager row of the same size to pair with
    memory = got["peak extra memory, in full-size tensors, CBAM"]
    assert memory["measured"] == pytest.approx(2.0) and not memory["met"]
    assert got["peak extra memory, in full-size tensors, SE/ECA"]["met"]
    assert not any(t["target"].startswith("timm") for t in report.targets({"rows": rows}))
    assert "| torch compiled / eager | every module, layout, size | 1.30 | 1.05 | **no** |" in \
        report.targets_markdown({"rows": rows})


def test_first_touch_measures_every_allocation_case(monkeypatch, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    pytest.importorskip("jax")
    from attnport.bench import first_touch

    monkeypatch.setitem(bench.SIZES, "large", TINY)
    result = first_touch.run(rounds=1)
    assert result["tensor_bytes"] == math.prod(TINY) * 4
    assert set(result["env"]) == {"THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES"}
    assert len(result["median_ms"]) == 7 and all(v > 0 for v in result["median_ms"].values())
