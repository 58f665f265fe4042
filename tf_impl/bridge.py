"""The uniform bridge: build / load_params / export_params / apply for the Keras layers.

Native variables are reached by attribute path (``fc1.kernel``); names and axis
permutations come from `reference.layout`.
"""
from __future__ import annotations

import functools

import keras
import numpy as np

import reference

from .cbam import CBAMBlock
from .eca import ECABlock
from .se import SEBlock

FRAMEWORK = "keras"
MODULES = {"se": SEBlock, "eca": ECABlock, "cbam": CBAMBlock}


def _variable(layer, path: str):
    return functools.reduce(getattr, path.split("."), layer)


def build(spec, seed: int | None = None, dtype="float32", data_format: str = "channels_last"):
    """A built layer for ``spec`` with Keras' own initializers, seeded when ``seed`` is given."""
    kwargs = {k: getattr(spec, k) for k in spec.__dataclass_fields__ if k != "channels"}
    layer = MODULES[spec.kind](**kwargs, data_format=data_format, dtype=reference.dtypes.check_supported(dtype),
                               kernel_initializer=keras.initializers.GlorotUniform(seed=seed))
    c = spec.channels
    layer.build((None, 1, 1, c) if data_format == "channels_last" else (None, c, 1, 1))
    return layer


def load_params(layer, params):
    """Assign canonical ``params`` to the layer's variables in place and return the layer.

    Refuses missing, unexpected and mis-shaped keys by name, and any lossy dtype cast.
    """
    spec = layer.spec
    reference.check_params(spec, params)
    reference.check_castable(params, layer.variable_dtype)
    for path, value in reference.to_native(spec, params, FRAMEWORK).items():
        _variable(layer, path).assign(value.astype(reference.numpy_dtype(layer.variable_dtype)))
    return layer


def export_params(layer) -> dict[str, np.ndarray]:
    """Canonical NumPy copies of the layer's weights, in the layer's dtype."""
    native = {}
    for info in layer.spec.param_table():
        path, _ = reference.native(info, FRAMEWORK)
        native[path] = np.array(keras.ops.convert_to_numpy(_variable(layer, path)))
    return reference.from_native(layer.spec, native, FRAMEWORK)


def apply(layer, x: np.ndarray, data_format: str = "channels_last") -> np.ndarray:
    """NumPy in, NumPy out; transposes only when ``data_format`` differs from the layer's."""
    x = np.asarray(x)
    reference.check_input(layer.spec, x.shape, x.dtype.name, reference.is_float_dtype(x.dtype), data_format)
    reference.check_input_dtype(x.dtype.name, layer.compute_dtype)
    to_layer = from_layer = None
    if data_format != layer.data_format:
        to_layer, from_layer = ((0, 3, 1, 2), (0, 2, 3, 1)) if data_format == "channels_last" else \
            ((0, 2, 3, 1), (0, 3, 1, 2))
        x = x.transpose(to_layer)
    y = keras.ops.convert_to_numpy(layer(x))
    return np.ascontiguousarray(y.transpose(from_layer) if from_layer else y)
