"""`attnport check`: every module in every installed backend against the float64 oracle,
plus weight transfer reference -> backend and backend -> backend."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import reference

from . import backends, cases

CHECK_SHAPES = ((1, 1, 1), (3, 2, 5), (2, 7, 7))  # (N, H, W)
# `attnport check --nets`: one network per family (docs/reference/networks.md), an odd and an even size
# (MobileNetV3 with symmetric padding; EfficientNet-B0 with 'same' padding and Keras' preprocessing inside)
NET_CHECK_MODELS = ("resnet18", "seresnet18", "ecaresnet26t", "cbamresnet18", "eca_resnet18", "cbam_resnet18",
                    "mobilenetv3_small_100", "EfficientNetB0")
NET_CHECK_SHAPES = ((1, 33, 33), (2, 32, 32))
NET_CHECK_DTYPES = ("float32", "float64")


@dataclass
class Row:
    module: str            # the case's label: its preset call (``SE.timm(200)``) or `cases.spec_id`
    backend: str
    dtype: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    roundtrip_exact: bool | None = None
    transfer_ok: bool | None = None  # native weights from every other backend give the same outputs
    passed: bool = False
    note: str = ""
    failures: list = field(default_factory=list)
    family: str = ""       # "se", "eca", "cbam"
    tol_fraction: float = float("nan")  # worst max|y - ref| / (atol + rtol |ref|) over the inputs: <= 1 passes


def _inputs(spec, dtype, seed=0):
    rng = np.random.default_rng(seed)
    for n, h, w in NET_CHECK_SHAPES if reference.nets.is_network(spec) else CHECK_SHAPES:
        x = rng.standard_normal((n, h, w, spec.channels)).astype(reference.numpy_dtype(dtype))
        yield "channels_last", x
        yield "channels_first", np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _outputs(bridge, module, spec, dtype):
    return [bridge.apply(module, x, fmt) for fmt, x in _inputs(spec, dtype)]


def check_spec(spec, dtype: str, bridges: dict) -> list[Row]:
    """Rows for one spec and dtype, one per backend in ``bridges`` (name -> backend package).

    Each backend builds one module, natively initialized (seed 1): its exported weights and outputs are
    what the other backends must reproduce (transfer), then the reference weights are loaded into it
    (oracle and round trip), then every other backend's native weights in turn (transfer in). One module
    per backend and spec: JAX compiles per module structure, initializer shape and input shape.
    """
    params = spec.init_params(seed=0, dtype=reference.numpy_dtype(dtype))
    oracle = [reference.forward(spec, params, x, fmt) for fmt, x in _inputs(spec, dtype)]
    network = reference.nets.is_network(spec)
    if network:  # the logits' tolerance grows with depth and scale (docs/explanation/tolerance.md)
        tol = reference.network_tolerance(spec, dtype, np.concatenate([r.ravel() for r in oracle]))
        pair_tol = tol.scaled(2)
    else:
        tol, pair_tol = reference.tolerance(dtype), reference.pair_tolerance(dtype)
    rows, modules, native = {}, {}, {}
    for name, bridge in bridges.items():
        module = modules[name] = bridge.build(spec, seed=1, dtype=dtype)
        native[name] = (bridge.export_params(module), _outputs(bridge, module, spec, dtype))
    for name, bridge in bridges.items():
        row = rows[name] = Row(spec.name if network else cases.label(spec), name, dtype,
                               family="network" if network else spec.kind)
        module = bridge.load_params(modules[name], params)
        exported = bridge.export_params(module)
        row.roundtrip_exact = all(exported[k].dtype == params[k].dtype and
                                  exported[k].tobytes() == params[k].tobytes() for k in params)
        outputs = _outputs(bridge, module, spec, dtype)
        errs = [reference.errors(y, r) for y, r in zip(outputs, oracle)]
        row.max_abs, row.max_rel = max(e[0] for e in errs), max(e[1] for e in errs)
        row.tol_fraction = max(reference.tolerance_fraction(y, r, tol) for y, r in zip(outputs, oracle))
        if not all(reference.within(y, r, tol) for y, r in zip(outputs, oracle)):
            row.failures.append("oracle")
        if not row.roundtrip_exact:
            row.failures.append("round-trip")
    # backend -> backend: the source's natively initialized weights, loaded into the target's module
    for src, (weights, expected) in native.items():
        for dst, dst_bridge in bridges.items():
            if dst == src:
                continue
            dst_module = dst_bridge.load_params(modules[dst], weights)
            if network:  # natively initialized logits have their own scale
                pair_tol = reference.network_tolerance(spec, dtype, np.concatenate([e.ravel() for e in expected])).scaled(2)
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


def summary(rows) -> list[dict]:
    """One line per module family x backend x dtype: cases, passed, the worst fraction of the tolerance,
    round trip and transfer all exact/ok, and the notes of the failed cases. "not installed" rows stay."""
    groups: dict = {}
    for r in rows:
        key = (r.family or r.module, r.backend, r.dtype)
        g = groups.setdefault(key, {"family": key[0], "backend": r.backend, "dtype": r.dtype, "cases": 0,
                                    "passed": 0, "tol_fraction": 0.0, "roundtrip_exact": True,
                                    "transfer_ok": None, "failed": [], "note": ""})
        if r.note == "not installed":
            g["note"] = "not installed"
            continue
        g["cases"] += 1
        g["passed"] += r.passed
        g["tol_fraction"] = max(g["tol_fraction"], r.tol_fraction)
        g["roundtrip_exact"] &= bool(r.roundtrip_exact)
        if r.transfer_ok is not None:
            g["transfer_ok"] = r.transfer_ok if g["transfer_ok"] is None else g["transfer_ok"] and r.transfer_ok
        if not r.passed:
            g["failed"].append(f"{r.module}: {r.note}")
    return list(groups.values())


def network_specs() -> list:
    """The networks `attnport check --nets` runs (`NET_CHECK_MODELS`)."""
    return [reference.nets.get(name) for name in NET_CHECK_MODELS]


def run_check(backend_names=None, specs=None, dtypes=cases.DTYPES, progress=None, nets: bool = False) -> list[Row]:
    """All rows; a backend whose framework is missing gives one 'not installed' row. ``nets=True`` adds
    `network_specs` in `NET_CHECK_DTYPES` (of ``dtypes``)."""
    backend_names = list(backend_names or backends.BACKENDS)
    rows, bridges = [], {}
    for name in backend_names:
        if backends.installed(name):
            bridges[name] = backends.load(name)
        else:
            rows.append(Row("*", name, "*", note="not installed", passed=True))
    backends.strict_numerics()
    specs = list(cases.SPECS if specs is None else specs)
    for dtype in dtypes:
        for spec in specs:
            rows.extend(check_spec(spec, dtype, bridges))
            if progress:
                progress()
    if nets:
        for dtype in [d for d in dtypes if d in NET_CHECK_DTYPES]:
            for spec in network_specs():
                rows.extend(check_spec(spec, dtype, bridges))
                if progress:
                    progress()
    return rows
