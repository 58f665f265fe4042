"""Keeping the frameworks' start-up chatter off attnport's output, without hiding real errors.

What a CPU run prints on stderr unasked, and where it comes from:

- TensorFlow's import (``tensorflow/core/util/port.cc``, ``xla/tsl/cuda/cudart_stub.cc``): absl's
  ``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR`` and INFO
  lines (oneDNN is on, no CUDA driver). They are written before absl's logging is initialized, so
  ``TF_CPP_MIN_LOG_LEVEL`` does not reach them.
- TensorFlow's first look at its devices (``xla/stream_executor/cuda/cuda_platform.cc``): an ERROR line
  ``failed call to cuInit`` on a machine without a GPU (a CUDA build on a CPU machine).
- torch.profiler (kineto, ``libkineto/src/SyncActivityProfilerHandler.cpp`` and
  ``DeviceProperties.cpp``): ``USDT: ... profiler_start`` / ``profiler_stop`` on every profiled region and
  ``ERROR: ... gpuGetDeviceCount failed`` once. ``KINETO_LOG_LEVEL`` cannot help: its levels order
  ERROR below USDT, so a level that drops the USDT lines drops kineto's real errors too.
- torch's inductor import (``torch/utils/cpp_extension.py``): a warning that no CUDA runtime is found.

Hence two tools: ``environment()`` sets what can be set before a framework is imported, and
``filtered_stderr()`` points the C-level stderr (file descriptor 2) at a temporary file around one noisy
call only (an import, a profiled region) and writes back every line that is not one of the ``NOISE``
lines above: a real error still reaches the terminal, just after the call.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import re
import sys
import tempfile

# (source, pattern) of every line filtered_stderr() drops; anything else is written back.
NOISE = (
    ("absl before InitializeLog", r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    ("absl/TF INFO line", r"I\d{4} [\d:.]+ +\d+ \S+:\d+\] .*"),
    ("TF cpu_feature_guard, second line", r"To enable the following instructions: .* with the appropriate compiler flags\."),
    ("TF/XLA without a GPU", r"E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*"),
    ("kineto profiled region", r"USDT:[\d\- :]+ \d+:\d+ SyncActivityProfilerHandler\.cpp:\d+\] profiler_(start|stop)"),
    ("kineto without a GPU", r"ERROR:[\d\- :]+ \d+:\d+ DeviceProperties\.cpp:\d+\] gpuGetDeviceCount failed with code \d+"),
    ("kineto stage", r"STAGE:[\d\- :]+ \d+:\d+ \S+\] Completed Stage: .*"),
)
_NOISE = [re.compile(pattern) for _, pattern in NOISE]

# Environment read by a framework when it is imported: only levels that drop INFO and WARNING.
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # TF's C++ logging: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR


def is_noise(line: str) -> bool:
    """True for a line of the frameworks' known start-up chatter (``NOISE``)."""
    line = line.rstrip("\r\n")
    return any(p.fullmatch(line) for p in _NOISE)


class _NoCudaRuntime(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No CUDA runtime is found")


def environment() -> None:
    """Before a framework import: the log levels of ``ENVIRONMENT`` (a value already set is kept) and a filter
    on torch's one CPU-only warning (``torch.utils.cpp_extension``: no CUDA runtime)."""
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    log = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaRuntime) for f in log.filters):
        log.addFilter(_NoCudaRuntime())


def _writes_to_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def filtered_stderr():
    """File descriptor 2 goes to a temporary file inside the block; then every line that is not ``NOISE`` is
    written back to stderr. Python's ``sys.stderr`` keeps reaching the terminal inside the block (a progress
    bar, warnings), so only what C/C++ code writes is held back, and only for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    if _writes_to_fd2(python_stderr):
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding,
                               errors="backslashreplace")
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if sys.stderr is not python_stderr:
            sys.stderr.flush()
            sys.stderr = python_stderr  # the replacement closes once no thread writes to it any more
        held.seek(0)
        kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                if not is_noise(line)]
        held.close()
        if kept:
            python_stderr.write("".join(kept))
            python_stderr.flush()


def import_quietly(name: str):
    """``importlib.import_module(name)`` after ``environment()``, its C-level chatter filtered. For
    TensorFlow the device scan (TF's first look for a GPU) runs inside too; it leaves the thread settings
    open (``tf.config.threading`` can still be set afterwards)."""
    environment()
    if name in sys.modules:
        return sys.modules[name]
    if name == "tensorflow" and "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        # torch's CUDA builds ship triton, which torch.compile loads lazily; libtriton loaded after
        # TensorFlow crashes the process, so it goes first
        importlib.import_module("triton")
    with filtered_stderr():
        module = importlib.import_module(name)
        if name == "tensorflow":
            module.config.list_physical_devices()
    return module
