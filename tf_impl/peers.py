"""Keras applications' SE blocks <-> attnport's Keras layers (tables: `reference.peers.keras_applications`).

Key convention: ``{variable.path: array}`` (``"block2a_se_reduce/kernel"``), which is what a live
Keras 3 model names its weights. A ``.weights.h5`` file names them ``layers/<auto>/vars/<i>``
instead: load it into the model with ``model.load_weights`` and read the model.
"""
from __future__ import annotations

import keras
import numpy as np

from reference import peers

from .adapter import build, export_params, load_params


def weights_from_keras_model(model) -> dict[str, np.ndarray]:
    """``{variable.path: NumPy copy}`` of every weight of a Keras 3 model."""
    out = {}
    for v in model.weights:
        if v.path in out:
            raise ValueError(f"two variables of {model.name!r} share the path {v.path!r}")
        out[v.path] = np.array(keras.ops.convert_to_numpy(v), copy=True)
    return out


def assign_keras_weights(model, weights) -> object:
    """Write ``{variable.path: array}`` (any subset of the model's weights) into ``model``; returns it.

    Refuses, before changing anything, paths the model does not have, shape mismatches and dtype
    casts that would lose information.
    """
    by_path = {v.path: v for v in model.weights}
    unknown = sorted(set(weights) - set(by_path))
    if unknown:
        raise KeyError(f"{model.name!r} has no variables {unknown}")
    for path, value in weights.items():
        v, value = by_path[path], np.asarray(value)
        if tuple(value.shape) != tuple(v.shape):
            raise ValueError(f"{path}: shape {tuple(value.shape)} does not fit the variable's {tuple(v.shape)}")
        if not np.can_cast(value.dtype, np.dtype(v.dtype), "safe"):
            raise ValueError(f"{path}: {value.dtype} does not fit losslessly into the variable's {v.dtype}")
    for path, value in weights.items():
        by_path[path].assign(np.asarray(value).astype(by_path[path].dtype))
    touched = {id(by_path[p]) for p in weights}
    for layer in model._flatten_layers(include_self=False):  # Normalization computes with constants taken at build
        if isinstance(layer, keras.layers.Normalization) and any(id(v) in touched for v in layer.weights):
            layer.finalize_state()
    return model


def from_keras_application(model) -> dict:
    """``{prefix: SEBlock}`` with the same weights, for every SE block of a Keras applications model
    (EfficientNet B0-B7 / V2, MobileNetV3 Small/Large), e.g. ``{"block2a": SEBlock, ...}``."""
    found = peers.PEER_LAYOUTS["keras-applications"].discover(weights_from_keras_model(model))
    dtype = model.weights[0].dtype if model.weights else "float32"
    return {prefix: load_params(build(spec, dtype=dtype), params) for prefix, (spec, params) in found.bundle.items()}


def to_keras_application(blocks: dict, model) -> object:
    """Write ``{prefix: our SE layer}`` (as `from_keras_application` returns) into the Keras application's
    SE blocks; returns the model. Refuses a block the application computes differently."""
    bundle = {prefix: (layer.spec, export_params(layer)) for prefix, layer in blocks.items()}
    return assign_keras_weights(model, peers.PEER_LAYOUTS["keras-applications"].export(bundle))
