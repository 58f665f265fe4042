"""Reading weight files without running code: safetensors, torch ``weights_only`` pickles, HDF5.

Every reader returns a flat ``{key: np.ndarray}`` plus the file's metadata (empty where the
format has none). Nothing here unpickles arbitrary objects or opens ``.keras`` archives. Every file
is hostile until checked: only regular files are opened, and sizes a file states are checked
against what it can hold before anything is read (docs/how-to/convert-a-checkpoint.md "Resource bounds", `attnport.limits`).
"""
from __future__ import annotations

import os
import pathlib
import re
import reprlib
import warnings
import zipfile

import numpy as np

from . import limits
from .checkpoint import CheckpointError, open_regular, read_tensors, warn_non_finite


class BadInput(ValueError):
    """A user error: unreadable, unsafe or malformed input. The CLI prints it and exits 2."""


TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def read_weights(path, keras_model: str | None = None, classes: int | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, metadata)`` from a ``.safetensors``, ``.pt``/``.pth``/``.bin`` or ``.h5`` file.

    ``keras_model``: the ``keras.applications`` architecture (e.g. ``"EfficientNetB0"``) a Keras 3
    ``.weights.h5`` belongs to. Such a file names variables ``layers/<auto name>/vars/<i>``, not by
    layer name, so the weights are loaded into that architecture (built with ``classes`` outputs, default
    Keras' 1000) and read back by variable path.

    Every file is treated as hostile (docs/how-to/convert-a-checkpoint.md "Checkpoint files", "Resource bounds"): it must be a
    regular file, and what it states is checked against its size before anything is read. Warns
    `NonFiniteWarning` for NaN/Inf weights.
    """
    path = pathlib.Path(path)
    with _opened(path):  # refuses a missing or non-regular file by what it is
        pass
    name = path.name.lower()
    if keras_model is not None:
        if not name.endswith(".weights.h5"):
            raise BadInput(f"{path}: --keras-model reads Keras .weights.h5 files")
        tensors = _read_keras_application(path, keras_model, classes)
        warn_non_finite(path, tensors)
        return tensors, {"layout": "keras-applications"}
    if name.endswith(".safetensors"):
        try:
            return read_tensors(path)
        except CheckpointError as exc:
            raise BadInput(str(exc)) from None
    if name.endswith(TORCH_SUFFIXES):
        tensors = _read_torch(path)
    elif name.endswith(".h5"):
        tensors = _read_h5(path)
    elif name.endswith(".keras"):
        raise BadInput(f"{path}: .keras archives carry code (safe_mode has had bypasses); attnport reads "
                       "weights only from .weights.h5, safetensors or torch weights-only files")
    else:
        raise BadInput(f"{path}: unknown weight file type; expected .safetensors, .pt/.pth/.bin/.ckpt or .h5")
    warn_non_finite(path, tensors)
    return tensors, {}


def _opened(path: pathlib.Path):
    """`checkpoint.open_regular`, with its refusal as `BadInput`."""
    try:
        return open_regular(path)
    except CheckpointError as exc:
        raise BadInput(str(exc)) from None


# --------------------------------------------------------------------------- torch

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TORCH_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise BadInput(f"{path}: reading torch files needs torch (pip install 'attnport[torch]')") from None
    from torch_impl.adapter import to_numpy

    with _opened(path) as f:
        _check_zip(path, f)
        try:
            with warnings.catch_warnings():  # a refusal below says it in words; torch's protocol warning is noise
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                obj = torch.load(f, map_location="cpu", weights_only=True)  # never weights_only=False
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a refusal, reported by file
            raise BadInput(f"{path}: refused to load: not a weights-only torch file"
                           f"{_torch_refusal(exc, _pickle_protocol(f))}") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint nesting
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise BadInput(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    problems = [p for p in (_torch_entry_problem(torch, k, v) for k, v in obj.items()) if p]
    if problems:
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise BadInput(f"{path}: expected a state dict (name -> tensor): " + "; ".join(problems[:10]) + more)
    return {k: to_numpy(v) for k, v in obj.items()}


def _check_zip(path: pathlib.Path, f) -> None:
    """A zip archive (torch's format since 1.6) may not decompress past `limits.MAX_EXPANSION`."""
    if not zipfile.is_zipfile(f):
        f.seek(0)
        return
    size = os.fstat(f.fileno()).st_size
    try:
        with zipfile.ZipFile(f) as archive:
            stated = sum(item.file_size for item in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise BadInput(f"{path}: not a readable zip archive ({exc})") from None
    problem = limits.expansion_problem(stated, size, "the zip archive")
    if problem:
        raise BadInput(f"{path}: {problem}")
    f.seek(0)


NEVER_UNPICKLED = "attnport never unpickles those, since unpickling can run any code"
RESAVE = ("if you trust the file, load it in your own code and save its weights alone: "
          "torch.save(model.state_dict(), PATH) or safetensors.torch.save_file(model.state_dict(), PATH)")
WEIGHTS_ONLY_PROTOCOLS = ("2", "3")  # what torch's weights-only reader reads (torch.save writes 2)


def _torch_refusal(exc: Exception, protocol: str | None) -> str:
    """Why torch's weights-only reader refused the file, in words, with the way out (after "not a weights-only
    torch file"); never torch's advice to load it unsafely. ``protocol``: `_pickle_protocol`'s answer.

    A global the pickle names (a class, a function) is meaningful and kept; torch's "Unsupported operand N"
    (a pickle instruction it does not implement) is not, and becomes what it means: a pickle protocol
    other than 2 or 3, else Python objects beyond tensors. Any other failure (a truncated or corrupt
    file) keeps torch's first line.
    """
    text = _ANSI.sub("", str(exc))
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        return (f": it holds pickled Python objects beyond tensors (blocked global {blocked.group(1)}), and "
                f"{NEVER_UNPICKLED}; {RESAVE}")
    built = re.search(r"but got <class '([\w.]+)'>", text)
    if built:
        return (f": it holds pickled Python objects beyond tensors (an object of class {built.group(1)}), and "
                f"{NEVER_UNPICKLED}; {RESAVE}")
    if re.search(r"Unsupported operand \d+", text):
        if protocol is not None and protocol not in WEIGHTS_ONLY_PROTOCOLS:
            return (f": it was pickled with protocol {protocol}, which torch's weights-only reader does not read "
                    "(torch.save writes protocol 2), and attnport never runs the full unpickler, since unpickling "
                    f"can run any code; {RESAVE}")
        return (": its pickle holds instructions torch's weights-only reader does not accept, for Python objects "
                f"beyond tensors, and {NEVER_UNPICKLED}; {RESAVE}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    advice = ("weights_only", "safe_globals", "trust", "documentation")
    kept = [line for line in lines if not any(word in line for word in advice)]
    return f" ({type(exc).__name__}: {kept[0][:200]})" if kept else f" ({type(exc).__name__})"


def _pickle_protocol(f) -> str | None:
    """The protocol the torch file's pickle declares ("2", "4", ...; "0 or 1" where it has no PROTO marker,
    which those protocols never write), or None where it cannot be told. Reads two bytes: of the file (the
    legacy format, whose first pickle has the protocol of the rest) or of the zip archive's ``data.pkl``
    (already checked by `_check_zip`)."""
    try:
        f.seek(0)
        if zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as archive:
                names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if not names:
                    return None
                with archive.open(names[0]) as member:
                    head = member.read(2)
        else:
            f.seek(0)
            head = f.read(2)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return None
    if len(head) < 2:
        return None
    return str(head[1]) if head[0] == 0x80 else "0 or 1"


def _torch_entry_problem(torch, key, value) -> str | None:
    """Why one state-dict entry is not a dense tensor attnport reads, or None."""
    if not isinstance(key, str):
        return f"key {reprlib.repr(key)} is a {type(key).__name__}, not a string"
    if not isinstance(value, torch.Tensor):
        return f"{key}: holds a {type(value).__name__}, not a tensor"
    if value.layout != torch.strided or value.is_nested:
        return f"{key}: is a sparse or nested tensor ({value.layout}); attnport reads dense tensors"
    if value.is_quantized:
        return f"{key}: is a quantized tensor ({value.dtype}); attnport reads unquantized weights"
    if value.is_meta:
        return f"{key}: is a meta tensor (shape only, no data)"
    name = str(value.dtype).removeprefix("torch.")
    if name not in _TORCH_DTYPES:
        return f"{key}: has dtype {name}, which attnport does not read ({', '.join(_TORCH_DTYPES)})"
    return None


# --------------------------------------------------------------------------- HDF5

def _read_h5(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file (e.g. a Keras ``.weights.h5``), keyed by its path, in native byte order."""
    h5py = _h5py(path)
    out: dict[str, np.ndarray] = {}
    with _opened(path) as f:
        try:
            with h5py.File(f, "r") as h5:
                for key, dataset in _checked_datasets(path, h5py, h5, os.fstat(f.fileno()).st_size):
                    arr = np.asarray(dataset[()])
                    out[key] = arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))
        except OSError as exc:
            raise BadInput(f"{path}: not a readable HDF5 file ({exc})") from None
    return out


def _h5py(path):
    try:
        import h5py
    except ImportError:
        raise BadInput(f"{path}: reading .h5 files needs h5py (installed with tensorflow)") from None
    if not hasattr(h5py.Group, "visit_links"):
        raise BadInput(f"{path}: reading .h5 files needs h5py >= 3.11 (pip install -U h5py)")
    return h5py


def _checked_datasets(path, h5py, h5, file_size: int) -> list:
    """``[(key, dataset)]`` of an open HDF5 file, after checking every link and dataset.

    Refused, all listed in one `BadInput`: soft and external links (never followed), external
    storage, virtual datasets, non-numeric dtypes, filters that are not HDF5's own, and stated sizes
    the file cannot hold (docs/how-to/convert-a-checkpoint.md "Resource bounds"). Nothing is read here.
    """
    problems, found = [], []

    def visit(name):
        link = h5.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            problems.append(f"{name}: a soft link to {link.path}")
        elif isinstance(link, h5py.ExternalLink):
            problems.append(f"{name}: an external link to {link.filename}:{link.path}")
        elif isinstance(h5[name], h5py.Dataset):
            found.append((name, h5[name]))

    h5.visit_links(visit)
    plain = compressed = 0
    for name, dataset in found:
        problem, stated, filtered = _dataset_problem(name, dataset, file_size)
        if problem:
            problems.append(problem)
        elif filtered:
            compressed += stated
        else:
            plain += stated
    if not problems and plain > file_size:
        problems.append(f"the unfiltered datasets together state {plain:,} bytes but the file holds {file_size:,}")
    if not problems:
        problem = limits.expansion_problem(plain + compressed, file_size, "the datasets together")
        if problem:
            problems.append(problem)
    if problems:
        raise BadInput(f"{path}: refused to read these HDF5 objects: " + "; ".join(problems))
    return found


def _dataset_problem(name: str, dataset, file_size: int) -> tuple[str | None, int, bool]:
    """``(why the dataset is refused or None, the bytes it states, whether it is filtered)``."""
    external = dataset.external
    if external:
        return f"{name}: external storage in {', '.join(str(entry[0]) for entry in external)}", 0, False
    if dataset.is_virtual:
        return f"{name}: a virtual dataset (VDS) that maps other datasets or files", 0, False
    if dataset.shape is None or dataset.dtype.kind not in "fiub" or dataset.dtype.names:
        return f"{name}: dtype {dataset.dtype} is not a numeric tensor", 0, False
    plist = dataset.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    unknown = [code for code in filters if code not in limits.H5_BUILTIN_FILTERS]
    if unknown:
        return f"{name}: filter {unknown[0]} is not one of HDF5's built-in filters", 0, False
    stated = int(np.prod(dataset.shape, dtype=object)) * dataset.dtype.itemsize
    if filters:
        return limits.expansion_problem(stated, file_size, f"{name}:"), stated, True
    if stated > file_size:
        return f"{name}: states {stated:,} bytes but the file holds {file_size:,}", stated, False
    return None, stated, False


def h5_shapes(path) -> dict[str, tuple]:
    """``{dataset path: shape}`` of an HDF5 file, every link and dataset checked, no data read."""
    path = pathlib.Path(path)
    h5py = _h5py(path)
    with _opened(path) as f:
        try:
            with h5py.File(f, "r") as h5:
                return {key: tuple(d.shape) for key, d in _checked_datasets(path, h5py, h5, os.fstat(f.fileno()).st_size)}
        except OSError as exc:
            raise BadInput(f"{path}: not a readable HDF5 file ({exc})") from None


def _read_keras_application(path: pathlib.Path, architecture: str, classes: int | None = None) -> dict[str, np.ndarray]:
    h5py = _h5py(path)
    with _opened(path) as f:  # the same refusals before Keras opens the file itself
        try:
            with h5py.File(f, "r") as h5:
                _checked_datasets(path, h5py, h5, os.fstat(f.fileno()).st_size)
        except OSError as exc:
            raise BadInput(f"{path}: not a readable HDF5 file ({exc})") from None
    try:
        import keras
        from tf_impl import weights_from_keras_model
    except ImportError:
        raise BadInput(f"{path}: --keras-model needs Keras (pip install 'attnport[tf]')") from None
    builder = getattr(keras.applications, architecture, None)
    if builder is None or not callable(builder):
        raise BadInput(f"--keras-model {architecture!r} is not a keras.applications architecture")
    model = builder(weights=None, **({"classes": classes} if classes else {}))
    try:
        model.load_weights(path)  # HDF5 weights only: no code runs
    except Exception as exc:  # noqa: BLE001 - any mismatch is the user's input, reported by file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{path}: does not load into keras.applications.{architecture} ({first})") from None
    return weights_from_keras_model(model)
