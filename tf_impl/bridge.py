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


def _permutations(layer, data_format: str):
    """(to the layer's format, back to the caller's), or (None, None) when they agree."""
    if data_format == layer.data_format:
        return None, None
    return ((0, 3, 1, 2), (0, 2, 3, 1)) if data_format == "channels_last" else ((0, 2, 3, 1), (0, 3, 1, 2))


def _input(layer, x, data_format: str) -> np.ndarray:
    x = np.asarray(x)
    reference.check_input(layer.spec, x.shape, x.dtype.name, reference.is_float_dtype(x.dtype), data_format)
    reference.check_input_dtype(x.dtype.name, layer.compute_dtype)
    return x


def _permute(a, perm):
    return a if perm is None else np.ascontiguousarray(np.asarray(a).transpose(perm))


def apply(layer, x: np.ndarray, data_format: str = "channels_last") -> np.ndarray:
    """NumPy in, NumPy out, in inference mode; transposes only when ``data_format`` differs from the layer's."""
    to_layer, from_layer = _permutations(layer, data_format)
    y = keras.ops.convert_to_numpy(layer(_permute(_input(layer, x, data_format), to_layer)))
    return np.ascontiguousarray(_permute(y, from_layer))


def vjp(layer, x: np.ndarray, dy: np.ndarray, data_format: str = "channels_last"):
    """Gradient of ``sum(apply(layer, x) * dy)`` w.r.t. x and every canonical parameter, by
    ``tf.GradientTape`` (so it needs the TensorFlow Keras backend).

    Returns ``(dx, dparams)`` like `reference.vjp`; non-trainable BatchNorm statistics get zeros.
    """
    import tensorflow as tf  # noqa: PLC0415 - only the gradient path is TensorFlow-specific

    to_layer, from_layer = _permutations(layer, data_format)
    x = _input(layer, x, data_format)
    cotangent = tf.constant(_permute(reference.validation.check_cotangent(x, dy), to_layer))
    xt = tf.constant(_permute(x, to_layer))
    infos = layer.spec.param_table()
    paths = [reference.native(info, FRAMEWORK)[0] for info in infos]
    variables = [_variable(layer, path) for path in paths]
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
    grads = tape.gradient(y, [xt, *(v.value for v in variables)], output_gradients=cotangent,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    native = {path: np.asarray(g) if v.trainable else np.zeros(v.shape, reference.numpy_dtype(v.dtype))
              for path, v, g in zip(paths, variables, grads[1:])}
    return _permute(grads[0].numpy(), from_layer), reference.from_native(layer.spec, native, FRAMEWORK)
