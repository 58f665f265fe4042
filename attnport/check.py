"""`attnport check`: every module in every installed backend against the float64 oracle,
plus weight transfer reference -> backend and backend -> backend."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import reference

from . import backends, cases

CHECK_SHAPES = ((1, 1, 1), (3, 2, 5), (2, 7, 7))  # (N, H, W)


@dataclass
class Row:
    module: str
    backend: str
    dtype: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    roundtrip_exact: bool | None = None
    transfer_ok: bool | None = None  # native weights from every other backend give the same outputs
    passed: bool = False
    note: str = ""
    failures: list = field(default_factory=list)


def _inputs(spec, dtype, seed=0):
    rng = np.random.default_rng(seed)
    for n, h, w in CHECK_SHAPES:
        x = rng.standard_normal((n, h, w, spec.channels)).astype(reference.numpy_dtype(dtype))
        yield "channels_last", x
        yield "channels_first", np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _outputs(bridge, module, spec, dtype):
    return [bridge.apply(module, x, fmt) for fmt, x in _inputs(spec, dtype)]


def check_spec(spec, dtype: str, bridges: dict) -> list[Row]:
    """Rows for one spec and dtype, one per backend in ``bridges`` (name -> backend package)."""
    params = spec.init_params(seed=0, dtype=reference.numpy_dtype(dtype))
    oracle = [reference.forward(spec, params, x, fmt) for fmt, x in _inputs(spec, dtype)]
    tol, pair_tol = reference.tolerance(dtype), reference.pair_tolerance(dtype)
    rows, modules = {}, {}
    for name, bridge in bridges.items():
        row = rows[name] = Row(cases.spec_id(spec), name, dtype)
        module = modules[name] = bridge.load_params(bridge.build(spec, seed=0, dtype=dtype), params)
        exported = bridge.export_params(module)
        row.roundtrip_exact = all(exported[k].dtype == params[k].dtype and
                                  exported[k].tobytes() == params[k].tobytes() for k in params)
        outputs = _outputs(bridge, module, spec, dtype)
        errs = [reference.errors(y, r) for y, r in zip(outputs, oracle)]
        row.max_abs, row.max_rel = max(e[0] for e in errs), max(e[1] for e in errs)
        if not all(reference.within(y, r, tol) for y, r in zip(outputs, oracle)):
            row.failures.append("oracle")
        if not row.roundtrip_exact:
            row.failures.append("round-trip")
    # backend -> backend: natively initialized source, exported, loaded into the target (the
    # target module above is reused: load_params replaces every weight it holds).
    for src, src_bridge in bridges.items():
        src_module = src_bridge.build(spec, seed=1, dtype=dtype)
        weights = src_bridge.export_params(src_module)
        expected = _outputs(src_bridge, src_module, spec, dtype)
        for dst, dst_bridge in bridges.items():
            if dst == src:
                continue
            dst_module = dst_bridge.load_params(modules[dst], weights)
            ok = all(reference.within(y, e, pair_tol)
                     for y, e in zip(_outputs(dst_bridge, dst_module, spec, dtype), expected))
            row = rows[dst]
            row.transfer_ok = ok if row.transfer_ok is None else (row.transfer_ok and ok)
            if not ok:
                row.failures.append(f"transfer from {src}")
    for row in rows.values():
        row.passed = not row.failures
        row.note = ", ".join(row.failures)
    return list(rows.values())


def run_check(backend_names=None, specs=None, dtypes=cases.DTYPES, progress=None) -> list[Row]:
    """All rows; a backend whose framework is missing gives one 'not installed' row."""
    backend_names = list(backend_names or backends.BACKENDS)
    rows, bridges = [], {}
    for name in backend_names:
        if backends.installed(name):
            bridges[name] = backends.load(name)
        else:
            rows.append(Row("*", name, "*", note="not installed", passed=True))
    backends.strict_numerics()
    specs = list(specs or cases.SPECS)
    for dtype in dtypes:
        for spec in specs:
            rows.extend(check_spec(spec, dtype, bridges))
            if progress:
                progress()
    return rows
