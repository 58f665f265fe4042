"""attnport's adapter for Keras 3 (`attnport.adapter.Adapter`): the bridge and `verify` run on it.

Native variables are reached by attribute path (``fc1.kernel``); in a whole network (`ResNetModel`,
`MobileNetModel`) the path starts with the layer's name (``layer1.0.se.fc1.kernel``: layer ``layer1.0.se``, then
``fc1.kernel``). Names and axis permutations come from `reference.layout` (layout key "keras"). A
layer or network computes in its own ``data_format``. Everything but `gradients` and `compile` works on
any Keras backend; those two use TensorFlow.
"""
from __future__ import annotations

import functools

import keras
import numpy as np

import reference
from attnport.adapter import Adapter, native_array

from .cbam import CBAMBlock
from .eca import ECABlock
from .mobile import MobileNetModel, build_mobilenet
from .nets import ResNetModel, build_resnet
from .se import SEBlock

FORMATS = reference.DATA_FORMATS
NETWORKS = {ResNetModel: build_resnet, MobileNetModel: build_mobilenet}  # network class -> its builder


def _variable(module, path: str):
    """The variable at dotted ``path``: by layer name in a network, by attributes in a block."""
    if isinstance(module, tuple(NETWORKS)):
        return module.variable(path)
    return functools.reduce(getattr, path.split("."), module)


class KerasAdapter(Adapter):
    name = "tf"
    modules = {"se": SEBlock, "eca": ECABlock, "cbam": CBAMBlock, "resnet": ResNetModel,
               "mobilenet": MobileNetModel}

    def construct(self, cls, spec, seed, dtype, data_format: str = "channels_last"):
        if cls in NETWORKS:
            return NETWORKS[cls](spec, dtype=dtype, data_format=data_format, seed=seed)
        kwargs = {k: getattr(spec, k) for k in spec.__dataclass_fields__ if k != "channels"}
        layer = cls(**kwargs, data_format=data_format, dtype=dtype,
                    kernel_initializer=keras.initializers.GlorotUniform(seed=seed))
        c = spec.channels
        layer.build((None, 1, 1, c) if data_format == "channels_last" else (None, c, 1, 1))
        return layer

    def native_format(self, module) -> str:
        return getattr(module, "data_format", None) or "channels_last"

    def param_dtype(self, module) -> str:
        return keras.backend.standardize_dtype(module.variable_dtype)

    def compute_dtype(self, module) -> str:
        return keras.backend.standardize_dtype(module.compute_dtype)

    def get(self, module, path):
        return np.array(keras.ops.convert_to_numpy(_variable(module, path)))

    def set(self, module, path, value):
        _variable(module, path).assign(native_array(value))

    def tensor(self, x):
        return keras.ops.convert_to_tensor(native_array(x))

    def numpy(self, t):
        return np.asarray(keras.ops.convert_to_numpy(t))

    def call(self, module, t):
        return module(t, training=False)

    def gradients(self, module, t, dy, paths):
        import tensorflow as tf  # noqa: PLC0415 - only the gradient path is TensorFlow-specific

        variables = [_variable(module, path) for path in paths]
        t = tf.constant(t)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = module(t)
        grads = tape.gradient(y, [t, *(v.value for v in variables)], output_gradients=tf.constant(dy),
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return grads[0], {p: g if v.trainable else None for p, v, g in zip(paths, variables, grads[1:])}

    def compile(self, module):
        import tensorflow as tf  # noqa: PLC0415

        return tf.function(lambda t: module(t, training=False), jit_compile=True)

    def wait(self, y):
        return self.numpy(y)

    def tap_names(self, module):
        return [layer.name for layer in getattr(module, "layers", [])]

    def run_tapped(self, module, t, names):
        """A sub-model on the named layers' input and output tensors: functional models only (a subclassed
        model has no graph to read, so its taps are left out)."""
        layers = {layer.name: layer for layer in getattr(module, "layers", [])}
        wanted = [n for n in names if n in layers]
        try:
            def first(tensor):
                return tensor[0] if isinstance(tensor, (list, tuple)) else tensor
            ends = [(first(layers[n].input), layers[n].output) for n in wanted]
            probe = keras.Model(module.inputs, [module.outputs[0]] + [e for pair in ends for e in pair])
        except Exception:  # noqa: BLE001 - not a functional graph (or a layer called twice): no taps
            return self.call(module, t), {}
        outs = probe([t] * len(module.inputs), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]  # a lone output comes back bare
        out = [keras.ops.convert_to_numpy(o) for o in outs]
        return out[0], {n: (out[1 + 2 * i], out[2 + 2 * i]) for i, n in enumerate(wanted)}

    def run_training(self, module, t):
        module(t, training=True)

    def variables(self, module):
        return [(v.path.replace("/", "."), tuple(v.shape), lambda a, v=v: v.assign(native_array(a)))
                for v in module.weights]

    def formats(self, module, spec):
        """The layer in its own format and, where its class rebuilds from its config with the other
        ``data_format``, a clone in that one; a note when it does not."""
        own = self.native_format(module)
        out, notes = {own: module}, []
        if getattr(module, "data_format", None) not in FORMATS:
            return out, notes
        other = FORMATS[1 - FORMATS.index(own)]
        try:
            config = {**module.get_config(), "data_format": other}
            if isinstance(module, tuple(NETWORKS)):
                config.pop("input_shape")  # the default one of the other format
            clone = type(module).from_config(config)
            shape = (1, 2, 2, spec.channels) if other == "channels_last" else (1, spec.channels, 2, 2)
            clone(np.zeros(shape, reference.numpy_dtype(self.compute_dtype(module))))
            out[other] = clone
        except Exception as e:  # noqa: BLE001 - a layer that cannot be rebuilt is tested in its own format
            notes.append(f"Keras layer not rebuilt with data_format={other!r} ({type(e).__name__}: {e}); "
                         f"tested in {own} only")
        return out, notes

    def strict_numerics(self):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # noqa: PLC0415

            tf.config.experimental.enable_tensor_float_32_execution(False)


ADAPTER = KerasAdapter()
build, load_params, export_params = ADAPTER.build, ADAPTER.load_params, ADAPTER.export_params
apply, vjp = ADAPTER.apply, ADAPTER.vjp
MODULES = ADAPTER.modules
