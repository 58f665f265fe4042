"""Reading weight files without running code: safetensors, torch ``weights_only`` pickles, HDF5.

Every reader returns a flat ``{key: np.ndarray}`` plus the file's metadata (empty where the
format has none). Nothing here unpickles arbitrary objects or opens ``.keras`` archives.
"""
from __future__ import annotations

import pathlib

import numpy as np


class BadInput(ValueError):
    """A user error: unreadable, unsafe or malformed input. The CLI prints it and exits 2."""


TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def read_weights(path, keras_model: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, metadata)`` from a ``.safetensors``, ``.pt``/``.pth``/``.bin`` or ``.h5`` file.

    ``keras_model``: the ``keras.applications`` architecture (e.g. ``"EfficientNetB0"``) a Keras 3
    ``.weights.h5`` belongs to. Such a file names variables ``layers/<auto name>/vars/<i>``, not by
    layer name, so the weights are loaded into that architecture and read back by variable path.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    name = path.name.lower()
    if keras_model is not None:
        if not name.endswith(".weights.h5"):
            raise BadInput(f"{path}: --keras-model reads Keras .weights.h5 files")
        return _read_keras_application(path, keras_model), {"layout": "keras-applications"}
    if name.endswith(".safetensors"):
        from .checkpoint import CheckpointError, read_tensors

        try:
            return read_tensors(path)
        except CheckpointError as exc:
            raise BadInput(str(exc)) from None
    if name.endswith(TORCH_SUFFIXES):
        return _read_torch(path), {}
    if name.endswith(".h5"):
        return _read_h5(path), {}
    if name.endswith(".keras"):
        raise BadInput(f"{path}: .keras archives carry code (safe_mode has had bypasses); attnport reads "
                       "weights only from .weights.h5, safetensors or torch weights-only files")
    raise BadInput(f"{path}: unknown weight file type; expected .safetensors, .pt/.pth/.bin/.ckpt or .h5")


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise BadInput(f"{path}: reading torch files needs torch (pip install 'attnport[torch]')") from None
    from torch_impl.adapter import to_numpy

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # never weights_only=False
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a refusal, reported by file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{path}: refused to load: not a weights-only torch file ({first})") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint nesting
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadInput(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    return {k: to_numpy(v) for k, v in obj.items()}


def _read_h5(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file (e.g. a Keras ``.weights.h5``), keyed by its path."""
    try:
        import h5py
    except ImportError:
        raise BadInput(f"{path}: reading .h5 files needs h5py (installed with tensorflow)") from None
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda key, obj: out.__setitem__(key, np.asarray(obj)) if isinstance(obj, h5py.Dataset)
                         else None)
    except OSError as exc:
        raise BadInput(f"{path}: not a readable HDF5 file ({exc})") from None
    return out


def _read_keras_application(path: pathlib.Path, architecture: str) -> dict[str, np.ndarray]:
    try:
        import keras
        from tf_impl import weights_from_keras_model
    except ImportError:
        raise BadInput(f"{path}: --keras-model needs Keras (pip install 'attnport[tf]')") from None
    builder = getattr(keras.applications, architecture, None)
    if builder is None or not callable(builder):
        raise BadInput(f"--keras-model {architecture!r} is not a keras.applications architecture")
    model = builder(weights=None)
    try:
        model.load_weights(path)  # HDF5 weights only: no code runs
    except Exception as exc:  # noqa: BLE001 - any mismatch is the user's input, reported by file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{path}: does not load into keras.applications.{architecture} ({first})") from None
    return weights_from_keras_model(model)
