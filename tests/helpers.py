"""Helpers shared by the test modules: backend lookup, cached modules, inputs."""
from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest

import reference
from attnport import backends, cases

BACKEND_NAMES = tuple(backends.BACKENDS)


def get_bridge(name: str):
    """The backend package, imported once per process; skips when its framework is missing."""
    if not backends.installed(name):
        pytest.skip(f"{backends.BACKENDS[name].requires} is not installed")
    bridge = backends.load(name)
    backends.strict_numerics()
    return bridge


def build_to_load(backend: str, spec, dtype: str):
    """A new module for ``spec`` that a test fills with `load_params` (every variable is overwritten). NNX:
    without Flax's initializers (``init="zeros"``), whose eager random ops compile once per kernel shape and
    cost more than the module's own compile."""
    options = {"init": "zeros"} if backend == "jax" else {}
    return get_bridge(backend).build(spec, dtype=dtype, **options)


@functools.lru_cache(maxsize=None)
def loaded_module(backend: str, spec, dtype: str, seed: int = 0):
    """A module for ``spec`` holding ``spec.init_params(seed)``; cached, tests must not mutate it."""
    return get_bridge(backend).load_params(build_to_load(backend, spec, dtype),
                                           spec.init_params(seed=seed, dtype=reference.numpy_dtype(dtype)))


def make_input(spec, n, hw, dtype, data_format="channels_last", seed=0):
    x = np.random.default_rng(seed).standard_normal((n, *hw, spec.channels)).astype(reference.numpy_dtype(dtype))
    return x if data_format == "channels_last" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def spec_params(specs):
    return [pytest.param(s, id=cases.spec_id(s)) for s in specs]


def run_cli(*argv):
    """``python -m attnport ARGV`` in a subprocess: (exit code, stdout, stderr). A subprocess proves the
    exit code and that no traceback reaches the user."""
    done = subprocess.run([sys.executable, "-m", "attnport", *map(str, argv)], capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout, done.stderr


def run_in_process(capsys, *argv):
    """``attnport ARGV`` in this process: (exit code, stdout, stderr); argparse's exit becomes its code, and
    any other exception escapes and fails the test."""
    from attnport import cli

    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def lines_run(fn) -> int:
    """The Python lines of the repository's own code (not the tests, not installed packages) that ``fn()``
    runs: a cost measure for "linear, not quadratic" tests that no timer's noise can fail."""
    import os
    import sys

    import attnport

    repo = os.path.dirname(os.path.dirname(os.path.abspath(attnport.__file__)))
    lines = 0

    def local(frame, event, arg):
        nonlocal lines
        lines += event == "line"
        return local

    def tracer(frame, event, arg):
        name = frame.f_code.co_filename
        ours = name.startswith(repo) and os.sep + "tests" + os.sep not in name and ".venv" not in name
        return local if ours else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(previous)
    return lines
