"""attnport's canonical checkpoint file: safetensors holding one module or a bundle of modules.

Format (version 1)
------------------
A standard safetensors file (8-byte little-endian header length, a JSON header, raw little-endian
tensor bytes). Tensors are the modules' canonical parameters (docs/reference/weights.md),
keyed ``f"{prefix}.{name}"``, e.g. ``layer1.0.se.fc1.weight``; the prefix ``""`` stands for a file
holding a single module, whose keys are then the bare canonical names (``fc1.weight``). The header's
``__metadata__`` (string -> string, as safetensors requires) holds:

- ``"format"``: ``"attnport"``;
- ``"format_version"``: ``"1"``;
- ``"modules"``: JSON ``{prefix: {"kind": "se" | "eca" | "cbam", "spec": {field: value}}}`` with every
  dataclass field of the (resolved) spec, tuples written as lists, in the bundle's order.

A bundle is ``{prefix: (spec, params)}``. Prefixes are dotted names without empty components; one
module's prefix may not lie inside another's (``a`` and ``a.b``), so every key belongs to exactly one
module, and ``""`` may only appear alone.

Dtypes
------
float64, float32, float16 and bfloat16 are stored as safetensors' own ``F64``, ``F32``, ``F16`` and
``BF16``, so any safetensors reader (torch, JAX, TF, Rust) sees the real dtype. bfloat16 comes from
ml_dtypes on the NumPy side.

*The bfloat16 route.* ``safetensors.numpy.save`` passes ``array.dtype.name`` to the Rust serializer,
and for an ml_dtypes array that name is ``"bfloat16"``, which the serializer maps to ``BF16``: writing
needs nothing special (checked with safetensors 0.8.0; every write is also verified bit for bit
below, so a library that stored it differently would be caught). Reading is where NumPy support
stops: ``safetensors.numpy.load``/``load_file`` raise ``KeyError: 'BF16'`` (their dtype table has no
BF16), and ``safe_open(framework="np")`` does not return an ml_dtypes array. So this module reads
with ``safetensors.deserialize`` -- the library's own Rust parser, which validates the header (size
cap, dtypes, shapes against byte ranges, non-overlapping offsets, the data fully covered) -- and
turns each tensor's raw little-endian bytes into an array with its own dtype table, in which ``BF16``
is ``ml_dtypes.bfloat16`` (and the float8 codes are ml_dtypes' float8 types). No hand-written
header, no uint16 views, no side-channel metadata.

Safety and integrity (docs/how-to/convert-a-checkpoint.md "Checkpoint files")
------------------------------------------------
- Nothing is ever unpickled: only safetensors is read, and a file that is not safetensors (a pickle,
  a zip from ``torch.save`` or ``.keras``, HDF5, ``.npy``) is refused by its first bytes with a
  `CheckpointError` naming the file. `load` also refuses any suffix but ``.safetensors`` (any case).
  Only regular files are opened (`open_regular`); a header key given twice is refused by name
  (safetensors' parser would keep the last); NaN/Inf weights warn `NonFiniteWarning`.
- `save` writes to a temporary file in the target's directory, fsyncs it, reloads it and compares
  every tensor (dtype, shape, bytes) and the metadata with what was asked for, and only then moves
  it into place with ``os.replace`` (without ``force``, an existing target is refused; where the
  file system supports hard links the final step is ``os.link``, which cannot overwrite a file that
  appeared meanwhile; with ``force`` the replaced file's mode is kept). On any failure -- a
  file-system error (`WriteError`), SIGINT (`Interrupted`), SIGTERM or SIGHUP -- the temporary file
  is removed and the target is untouched; a temporary file whose writer was killed outright is
  removed by the next write of the same target. The same input gives the same bytes.
- Truncated or corrupt files raise `CheckpointError` (a ``ValueError``) naming the file, never the
  safetensors extension's own exception type.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import reprlib
import signal
import socket
import stat
import struct
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

import reference
from reference.dtypes import SUPPORTED as SUPPORTED_DTYPES
from reference.validation import ParamError

from . import limits

FORMAT = "attnport"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"

Bundle = dict[str, tuple[Any, dict[str, np.ndarray]]]

__all__ = ["FORMAT", "FORMAT_VERSION", "SUFFIX", "Bundle", "CheckpointError", "CheckpointParamError", "Summary",
           "WriteError", "Interrupted", "NonFiniteWarning", "save", "load", "read_tensors", "open_regular",
           "module_key"]


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not hold what it declares. ``path`` names the file."""

    def __init__(self, path, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class WriteError(OSError):
    """The file system refused the write (full disk, read-only, quota): nothing was written, and an
    existing file is untouched. ``errno`` is the system's; ``filename`` the target."""

    def __init__(self, path, cause: OSError, existed: bool):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.existed = existed

    def __str__(self) -> str:
        kept = ", the existing file is untouched" if self.existed else ""
        return f"{self.filename}: cannot write: {self.strerror}; nothing was written{kept}"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a write, raised after the temporary file was removed."""

    def __init__(self, path):
        super().__init__(f"{path}: interrupted by SIGINT; nothing was written")


class NonFiniteWarning(UserWarning):
    """Weights hold NaN or Inf. ``counts`` maps tensor key -> (NaN count, Inf count); ``path`` names the file."""

    def __init__(self, path, counts: dict[str, tuple[int, int]]):
        self.path, self.counts = str(path), dict(counts)
        listed = "; ".join(f"{key}: {nan} NaN, {inf} Inf" for key, (nan, inf) in list(self.counts.items())[:10])
        more = f"; and {len(self.counts) - 10} more" if len(self.counts) > 10 else ""
        super().__init__(f"{self.path}: non-finite weights in {len(self.counts)} tensor(s): {listed}{more}")


class VerificationError(CheckpointError):
    """A written file did not read back bit for bit (the CLI exits 1)."""


class CheckpointParamError(CheckpointError):
    """The tensors of a checkpoint do not match its declared modules.

    ``modules`` maps prefix -> the `reference.ParamError` for that module (its ``missing``,
    ``unexpected`` and ``mismatched`` name full tensor keys); ``orphans`` lists tensors in the
    file that belong to no declared module.
    """

    def __init__(self, path, modules: dict[str, ParamError], orphans=()):
        self.modules = dict(modules)
        self.orphans = sorted(orphans)
        lines = ["tensors do not match the declared modules"]
        for prefix, err in self.modules.items():
            where = f"module {prefix!r}" if prefix else "the module"
            for key in err.missing:
                lines.append(f"  {where}: missing key {key}")
            for key in err.unexpected:
                lines.append(f"  {where}: unexpected key {key}")
            for key, (want, got) in sorted(err.mismatched.items()):
                lines.append(f"  {where}: shape mismatch for {key}: expected {want}, got {got}")
            for key, why in sorted(err.bad_dtype.items()):
                lines.append(f"  {where}: bad dtype for {key}: {why}")
        if self.orphans:
            lines.append("  tensors that belong to no declared module: " + ", ".join(self.orphans))
        super().__init__(path, "\n".join(lines))


@dataclass(frozen=True)
class Summary:
    """What `save` wrote: ``str(summary)`` is the one-line report."""

    modules: int
    tensors: int
    bytes: int
    dtypes: list[str] = field(default_factory=list)
    path: str = ""

    def __str__(self) -> str:
        def count(n, word):
            return f"{n:,} {word}{'' if n == 1 else 's'}"

        return (f"wrote {count(self.modules, 'module')}, {count(self.tensors, 'tensor')}, "
                f"{count(self.bytes, 'byte')}, {'/'.join(self.dtypes) or 'no dtype'} to {self.path}")


def module_key(prefix: str, name: str) -> str:
    """The tensor key of canonical parameter ``name`` of the module at ``prefix``."""
    return f"{prefix}.{name}" if prefix else name


# --------------------------------------------------------------------------- reading

# safetensors dtype code -> NumPy dtype (a callable for the ml_dtypes ones, imported lazily).
_NUMPY_TYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool", "C64": "complex64",
}
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
              "F8_E8M0": "float8_e8m0fnu"}


def _numpy_dtype(code: str, path, key: str) -> np.dtype:
    if code in _NUMPY_TYPES:
        return np.dtype(_NUMPY_TYPES[code])
    if code in _ML_DTYPES:
        try:
            import ml_dtypes  # noqa: PLC0415 - only the non-NumPy dtypes need it
        except ImportError:
            raise CheckpointError(path, f"tensor {key} has dtype {code}, which needs the ml_dtypes package "
                                        f"(pip install ml_dtypes)") from None
        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[code]))
    raise CheckpointError(path, f"tensor {key} has dtype {code}, which attnport cannot represent in NumPy")


def _sniff(data: bytes) -> str | None:
    """A name for well-known non-safetensors contents, from their first bytes."""
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or data[:1] in (b"(", b"]", b"}") \
            and data[-1:] == b".":
        return "a Python pickle"
    if data[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save, .keras or .npz)"
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return "an HDF5 file (Keras .h5)"
    if data[:6] == b"\x93NUMPY":
        return "a NumPy .npy file"
    return None


def _not_safetensors(path, data: bytes, why: str) -> CheckpointError:
    what = _sniff(data)
    if what:
        return CheckpointError(path, f"not a safetensors file: it looks like {what}. attnport reads only "
                                     "safetensors and never unpickles; convert the weights with the framework "
                                     "that wrote them")
    return CheckpointError(path, f"not a valid safetensors file ({why})")


def _parse(path, data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if len(data) < 8:
        raise _not_safetensors(path, data, f"{len(data)} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", data[:8])
    if data[8:9] != b"{":
        raise _not_safetensors(path, data, "the header is not a JSON object")
    if 8 + header_len > len(data):
        raise CheckpointError(path, f"truncated or not safetensors: the header claims {header_len:,} bytes "
                                    f"but the file has only {len(data):,}")
    import safetensors  # noqa: PLC0415

    try:
        header = json.loads(data[8:8 + header_len], object_pairs_hook=_unique_keys)
        flat = safetensors.deserialize(data)
    except _DuplicateKey as e:
        raise CheckpointError(path, f"the header lists the key {e.key!r} twice; readers disagree on which "
                                    "one counts") from None
    except Exception as e:  # SafetensorError subclasses Exception only; never let it leak
        raise CheckpointError(path, f"corrupt or truncated safetensors file ({e})") from None
    metadata = header.get("__metadata__") or {}
    tensors = {}
    for key, view in flat:
        dtype = _numpy_dtype(view["dtype"], path, key)
        try:
            arr = np.frombuffer(view["data"], dtype=dtype).reshape(view["shape"])
        except ValueError as e:
            raise CheckpointError(path, f"tensor {key}: {e}") from None
        if sys.byteorder != "little" and dtype.itemsize > 1:  # safetensors is little-endian
            arr = arr.byteswap()
        tensors[key] = arr
    # Keep the file's own key order (safetensors sorts by alignment, then name) stable for callers.
    return dict(sorted(tensors.items())), dict(metadata)


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs) -> dict:
    """``json`` object hook: a repeated key is an error (safetensors' own parser keeps the last)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def open_regular(path):
    """``path`` opened for binary reading if it is a regular file (symlinks followed).

    A FIFO, directory, device or socket is refused by what it is, before it is opened for reading
    (a FIFO would block, ``/dev/zero`` never ends); the open itself never blocks, and the opened
    file is checked again. Raises `CheckpointError` naming the file.
    """
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(path, "no such file") from None
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(before.st_mode):
        raise CheckpointError(path, limits.not_regular(path, before.st_mode))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(after.st_mode):
        os.close(fd)
        raise CheckpointError(path, "was replaced while it was being opened; refusing to read it")
    return os.fdopen(fd, "rb")


def _read(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with open_regular(path) as f:
        data = f.read()
    return _parse(path, data)


def non_finite_counts(tensors: Mapping[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    """``{key: (NaN count, Inf count)}`` for every floating tensor holding either."""
    counts = {}
    for key, arr in tensors.items():
        if arr.dtype.kind in "biuSUO" or arr.dtype.names:
            continue
        try:
            finite = np.isfinite(arr)
        except TypeError:  # not a floating type NumPy (or ml_dtypes) can test
            continue
        if not finite.all():
            nan = int(np.count_nonzero(np.isnan(arr)))
            counts[key] = (nan, int(arr.size - np.count_nonzero(finite)) - nan)
    return counts


def warn_non_finite(path, tensors: Mapping[str, np.ndarray], stacklevel: int = 3) -> None:
    """Warn (`NonFiniteWarning`) when any tensor holds NaN or Inf, with the counts per tensor."""
    counts = non_finite_counts(tensors)
    if counts:
        warnings.warn(NonFiniteWarning(path, counts), stacklevel=stacklevel)


def read_tensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of any safetensors file, each in its own dtype, and the header metadata.

    BF16 tensors come back as ml_dtypes bfloat16 arrays. The file is read and validated by
    safetensors' parser; nothing is unpickled, whatever the suffix. Raises `CheckpointError`
    naming the file for anything that is not a complete, valid safetensors file (a repeated
    header key included) or not a regular file. Warns `NonFiniteWarning` for NaN/Inf weights.
    """
    tensors, metadata = _read(path)
    warn_non_finite(path, tensors)
    return tensors, metadata


def _spec_from_json(path, prefix: str, entry) -> Any:
    where = f"module {prefix!r}"
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str) or \
            not isinstance(entry.get("spec"), dict):
        raise CheckpointError(path, f"{where}: metadata must be {{\"kind\": str, \"spec\": {{field: value}}}}, "
                                    f"got {reprlib.repr(entry)}")
    kind = entry["kind"]
    if kind not in reference.SPECS:
        raise CheckpointError(path, f"{where}: unknown kind {reprlib.repr(kind)}; this attnport knows "
                                    f"{sorted(reference.SPECS)}")
    cls = reference.SPECS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = entry["spec"]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise CheckpointError(path, f"{where}: unknown {kind} spec field(s) {_short(', '.join(unknown))}")
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    absent = [name for name in required if name not in values]
    if absent:
        raise CheckpointError(path, f"{where}: missing {kind} spec field(s) {', '.join(absent)}")
    kwargs = {name: tuple(v) if isinstance(v, list) else v for name, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, ArithmeticError, RecursionError) as e:
        raise CheckpointError(path, f"{where}: invalid {kind} spec: {_short(e)}") from None


def _short(exc: BaseException, limit: int = 300) -> str:
    """An exception's message, cut to ``limit`` characters (hostile values can be huge)."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _check_prefixes(prefixes, error) -> None:
    """Prefixes are dotted names; '' only alone; none inside another. Linear in the prefixes' components:
    each prefix's ancestors are looked up in a set (a file may hold a whole network's modules)."""
    prefixes = list(prefixes)
    for p in prefixes:
        if not isinstance(p, str):
            raise error(f"a module prefix must be a string, got {reprlib.repr(p)}")
        if p and any(part == "" for part in p.split(".")):
            raise error(f"module prefix {reprlib.repr(p)} has an empty dotted component")
    if "" in prefixes and len(prefixes) > 1:
        raise error("the prefix '' (a single-module file) cannot be combined with other modules")
    known = set(prefixes)
    for q in prefixes:
        parts = q.split(".")
        for i in range(1, len(parts)):
            p = ".".join(parts[:i])
            if p in known:
                raise error(f"module prefix {reprlib.repr(q)} lies inside module {reprlib.repr(p)}; a key could "
                            "belong to either")


def load(path) -> Bundle:
    """Read an attnport checkpoint: ``{prefix: (spec, params)}``, every dtype as stored.

    Raises `CheckpointError` (naming the file) for a wrong suffix, non-safetensors or corrupt
    contents, missing or foreign metadata, an unknown format version, or an invalid spec
    (naming the prefix and field), and `CheckpointParamError` when the tensors do not match the
    declared modules (missing, unexpected, mis-shaped and orphan keys, each by full key).
    """
    if not _has_suffix(path):
        raise CheckpointError(path, f"attnport checkpoints are {SUFFIX} files; refusing to read this one "
                                    "(attnport never unpickles)")
    tensors, metadata = _read(path)
    bundle = bundle_from_tensors(path, tensors, metadata)
    warn_non_finite(path, tensors)
    return bundle


def _has_suffix(path) -> bool:
    return Path(path).suffix.lower() == SUFFIX


def bundle_from_tensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> Bundle:
    """The bundle an attnport file's tensors and metadata describe (see `load`); ``path`` names it in errors."""
    fmt = metadata.get("format")
    if fmt != FORMAT:
        detail = "it has no attnport metadata (a plain safetensors file? use read_tensors)" if fmt is None \
            else f"its format is {fmt!r}, not {FORMAT!r}"
        raise CheckpointError(path, f"not an attnport checkpoint: {detail}")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(path, f"format version {version!r} is not supported; this attnport reads "
                                    f"version {FORMAT_VERSION}")
    try:
        modules = json.loads(metadata.get("modules", ""))
    except (ValueError, RecursionError) as e:  # also integers past Python's digit limit, deep nesting
        raise CheckpointError(path, f"the 'modules' metadata is not valid JSON ({_short(e)})") from None
    if not isinstance(modules, dict):
        raise CheckpointError(path, "the 'modules' metadata must be a JSON object {prefix: module}")
    _check_prefixes(modules, lambda msg: CheckpointError(path, msg))
    specs = {prefix: _spec_from_json(path, prefix, entry) for prefix, entry in modules.items()}

    layout = metadata.get("layout", "canonical")
    if layout != "canonical" and layout not in NATIVE_LAYOUTS:
        raise CheckpointError(path, f"unknown layout {layout!r}; attnport files are 'canonical', 'keras' or 'flax'")
    grouped: dict[str, dict[str, np.ndarray]] = {prefix: {} for prefix in specs}
    orphans = []
    for key, arr in tensors.items():
        owner = "" if "" in specs else next((p for p in specs if key.startswith(p + ".")), None)
        if owner is None:
            orphans.append(key)
        else:
            grouped[owner][key[len(owner) + 1:] if owner else key] = arr
    if layout != "canonical":
        grouped = {prefix: _native_to_canonical(path, prefix, specs[prefix], native, NATIVE_LAYOUTS[layout])
                   for prefix, native in grouped.items()}
    problems = {}
    for prefix, spec in specs.items():
        try:
            reference.check_params(spec, grouped[prefix])
        except ParamError as e:
            def full(names):
                return [module_key(prefix, n) for n in names]

            problems[prefix] = ParamError(full(e.missing), full(e.unexpected),
                                          {module_key(prefix, n): v for n, v in e.mismatched.items()},
                                          {module_key(prefix, n): v for n, v in e.bad_dtype.items()},
                                          context=f"module {prefix!r} ({spec!r})")
    if problems or orphans:
        raise CheckpointParamError(path, problems, orphans)
    return {prefix: (spec, {name: grouped[prefix][name] for name in spec.param_shapes()})
            for prefix, spec in specs.items()}


def _native_to_canonical(path, prefix, spec, native: dict[str, np.ndarray], framework: str) -> dict:
    """Undo `reference.to_native` for one module; a missing or mis-shaped native key is named."""
    problems = []
    for info in spec.param_table():
        name, _ = reference.native(info, framework)
        want = reference.native_shape(info, framework)
        if name not in native:
            problems.append(f"missing key {module_key(prefix, name)}")
        elif tuple(native[name].shape) != want:
            problems.append(f"shape mismatch for {module_key(prefix, name)}: expected {want}, "
                            f"got {tuple(native[name].shape)}")
    extra = set(native) - {reference.native(i, framework)[0] for i in spec.param_table()}
    problems += [f"unexpected key {module_key(prefix, k)}" for k in sorted(extra)]
    if problems:
        raise CheckpointError(path, f"module {prefix!r} ({framework} layout): " + "; ".join(problems))
    return reference.from_native(spec, native, framework)


# --------------------------------------------------------------------------- writing

def _spec_to_json(spec) -> dict:
    def plain(v):
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

    return {"kind": spec.kind, "spec": {f.name: plain(getattr(spec, f.name)) for f in dataclasses.fields(spec)}}


NATIVE_LAYOUTS = {"keras": "keras", "flax": "flax"}  # layout name -> reference.layout framework


def _prepare(bundle, layout: str = "canonical") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Validate the bundle; return (tensors by key, metadata)."""
    if layout != "canonical" and layout not in NATIVE_LAYOUTS:
        raise ValueError(f"layout={layout!r}: attnport files are 'canonical', 'keras' or 'flax'")
    if not isinstance(bundle, Mapping):
        raise TypeError(f"a bundle maps prefix -> (spec, params), got {type(bundle).__name__}")
    if not bundle:
        raise ValueError("the bundle is empty; nothing to save")
    _check_prefixes(bundle, ValueError)
    tensors, modules = {}, {}
    for prefix, entry in bundle.items():
        where = f"module {prefix!r}" if prefix else "the module (prefix '')"
        if not (isinstance(entry, tuple) and len(entry) == 2):
            raise TypeError(f"{where}: a bundle entry must be a (spec, params) tuple, got {type(entry).__name__}")
        spec, params = entry
        if not (dataclasses.is_dataclass(spec) and reference.SPECS.get(getattr(spec, "kind", None)) is type(spec)):
            raise TypeError(f"{where}: expected a reference spec ({', '.join(c.__name__ for c in reference.SPECS.values())}), "
                            f"got {type(spec).__name__}")
        try:
            reference.check_params(spec, params)
        except ParamError as e:
            raise ParamError(e.missing, e.unexpected, e.mismatched, e.bad_dtype,
                             context=f"{where} ({spec!r})") from None
        bad = {name: f"{np.dtype(v.dtype).name} is not one of {SUPPORTED_DTYPES}"
               for name, v in params.items() if np.dtype(v.dtype).name not in SUPPORTED_DTYPES}
        if bad:
            raise ParamError(bad_dtype=bad, context=f"{where} ({spec!r})")
        stored = {name: params[name] for name in spec.param_shapes()}
        if layout != "canonical":
            stored = reference.to_native(spec, stored, NATIVE_LAYOUTS[layout])
        for name, value in stored.items():
            arr = np.ascontiguousarray(np.asarray(value))
            if not arr.dtype.isnative:
                arr = arr.astype(arr.dtype.newbyteorder("="))
            tensors[module_key(prefix, name)] = arr
        modules[prefix] = _spec_to_json(spec)
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                "modules": json.dumps(modules, allow_nan=False, separators=(",", ":"))}
    if layout != "canonical":
        metadata["layout"] = layout
    return tensors, metadata


def _serialize(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """safetensors bytes, the same for the same input: safetensors writes the metadata in hash order
    (a Rust ``HashMap``), so the header is re-emitted with the metadata keys sorted."""
    from safetensors.numpy import save as serialize  # noqa: PLC0415

    data = serialize(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header with spaces to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


def _write_payload(f, data: bytes) -> None:
    """Write ``data`` to the open temporary file and make it durable. (Tests replace this.)"""
    view, fd = memoryview(data), f.fileno()
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _verify(path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    got, got_meta = _read(path)
    problems = []
    if set(got) != set(tensors):
        problems.append(f"keys differ: missing {sorted(set(tensors) - set(got))}, "
                        f"extra {sorted(set(got) - set(tensors))}")
    for key in sorted(set(got) & set(tensors)):
        a, b = tensors[key], got[key]
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            problems.append(f"{key}: wrote {a.dtype.name}{list(a.shape)}, read back {b.dtype.name}{list(b.shape)}"
                            + ("" if a.dtype != b.dtype or a.shape != b.shape else " with different bytes"))
    if got_meta != metadata:
        problems.append("the metadata differs")
    if problems:
        raise VerificationError(path, "the written file does not read back bit for bit: " + "; ".join(problems))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _new_mode(path: Path, force: bool) -> int:
    """The mode of the file being replaced (``force`` keeps it), else a normal new file's mode."""
    if force:
        try:
            return stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            pass
    return 0o666 & ~_current_umask()


# --------------------------------------------------------------------------- temporary files

# ``.NAME.HOST-PID-XXXXXXXX.tmp`` beside the target: HOST is a short hash of the host name, PID the
# writer's, XXXXXXXX mkstemp's random part. NAME is cut so the whole stays within the file system's
# name limit (pids are allowed 10 digits, so the cut does not depend on the pid).
_TEMP = re.compile(r"\.(?P<name>.*)\.(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)-[a-z0-9_]{8}\.tmp", re.DOTALL)
_TEMP_FIXED = len(".." + "h" * 6 + "-" + "9" * 10 + "-" + "x" * 8 + ".tmp")


def _host_tag() -> str:
    return hashlib.blake2s(socket.gethostname().encode(), digest_size=3).hexdigest()


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _temp_stem(path: Path) -> str:
    """The target's name, cut (whole characters) so that its temporary name fits the name limit."""
    budget, name = _name_max(path.parent) - _TEMP_FIXED, path.name
    while len(os.fsencode(name)) > budget:
        name = name[:-1]
    return name


def _pid_alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) is not a probe
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: alive, another user's
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Remove temporary files of ``path`` whose writer (on this host) is no longer running: what a
    SIGKILL or a power cut leaves. Another target's or a live writer's are left alone."""
    stem, host = _temp_stem(path), _host_tag()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        found = _TEMP.fullmatch(entry.name)
        if found and found["name"] == stem and found["host"] == host and not _pid_alive(int(found["pid"])):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


class _Signalled(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # a second one must not interrupt the clean-up
    raise _Signalled(signum)


def _raise_interrupted(signum, frame):
    signal.signal(signum, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _clean_up_on_signals(path: Path):
    """SIGTERM, SIGHUP and SIGINT unwind the write (removing the temporary file) where their
    action is still the default: then SIGTERM/SIGHUP end the process as they would have, and
    SIGINT raises `Interrupted` (a KeyboardInterrupt). Handlers set by the caller are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    defaults = {getattr(signal, name): (signal.SIG_DFL, _raise_signalled) for name in ("SIGTERM", "SIGHUP")
                if hasattr(signal, name)}
    defaults[signal.SIGINT] = (signal.default_int_handler, _raise_interrupted)
    previous = {}
    for signum, (default, handler) in defaults.items():
        if signal.getsignal(signum) is default:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    except _Signalled as exc:
        signal.signal(exc.signum, signal.SIG_DFL)
        os.kill(os.getpid(), exc.signum)  # the default action: the process ends by this signal
        raise SystemExit(128 + exc.signum) from None  # only if the signal is blocked
    except KeyboardInterrupt:
        if signal.SIGINT not in previous:
            raise
        raise Interrupted(path) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def save(path, bundle: Bundle, *, force: bool = False, layout: str = "canonical") -> Summary:
    """Write ``bundle`` (``{prefix: (spec, params)}``) to the safetensors file ``path``, atomically.

    Every module is checked with `reference.check_params` first (errors name the prefix); the
    dtypes must be float64, float32, float16 or bfloat16 and are stored as they are. An existing
    ``path`` is refused (`FileExistsError`) unless ``force``. The file is written to a temporary
    file beside ``path``, read back and compared bit for bit, then moved into place; on any failure
    no temporary file remains and ``path`` is untouched. Returns a `Summary`; ``str()`` of it is
    the one-line report.

    ``layout="keras"`` or ``"flax"`` stores each tensor under its native variable path and in its
    native axis order (``layer1.0.se.fc1.kernel`` [C, R]) instead of the canonical one; `load`
    converts it back (metadata ``"layout"`` says which).
    """
    tensors, metadata = _prepare(bundle, layout)
    return write_tensors(path, tensors, metadata, force=force, modules=len(bundle))


def write_tensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str], *, force: bool = False,
                  modules: int = 0) -> Summary:
    """Write any flat ``{key: array}`` as a ``.safetensors`` file with the guarantees of `save`
    (atomic, no overwrite without ``force``, read back bit for bit). Used for peer layouts too."""
    path = Path(path)
    if not _has_suffix(path):
        raise CheckpointError(path, f"attnport writes safetensors files; the name must end in {SUFFIX}")
    directory = path.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"{path}: the directory {directory} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True to overwrite it")

    data = _serialize(tensors, metadata)
    with _clean_up_on_signals(path):
        _remove_stale_temps(path)
        _publish(path, data, tensors, metadata, force)
    _fsync_directory(directory)
    dtypes = sorted({a.dtype.name for a in tensors.values()})
    return Summary(modules=modules, tensors=len(tensors), bytes=len(data), dtypes=dtypes, path=str(path))


def _publish(path: Path, data: bytes, tensors, metadata, force: bool) -> None:
    """Write ``data`` to a temporary file beside ``path``, verify it, move it into place; on any
    failure remove it. File-system errors become `WriteError`."""
    existed = path.exists()
    mode = _new_mode(path, force)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{_temp_stem(path)}.{_host_tag()}-{os.getpid()}-",
                                   suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600
                os.fchmod(f.fileno(), mode)
            _write_payload(f, data)
        _verify(tmp, tensors, metadata)
        _move_into_place(tmp, path, force)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise WriteError(path, exc, existed) from None
        raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # after os.link the temporary name is still there


def _move_into_place(tmp: str, path: Path, force: bool) -> None:
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path appeared meanwhile; never overwrites
    except FileExistsError:
        raise FileExistsError(f"{path} exists; pass force=True to overwrite it") from None
    except OSError:  # no hard links on this file system
        if path.exists():
            raise FileExistsError(f"{path} exists; pass force=True to overwrite it") from None
        os.replace(tmp, path)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable where the platform allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
