"""Saved and reloaded models give bit-identical outputs (and bit-identical weights).

- Keras: a functional model (``keras.Input`` -> the layer) per family, both data formats and one float64
  case, saved as ``.keras`` (reloaded with ``keras.saving.load_model(path, safe_mode=True)``) and as
  ``.weights.h5`` (``model.load_weights``); ``get_config`` / ``from_config`` for layers and models.
- torch: ``state_dict`` through ``torch.save`` / ``torch.load(weights_only=True)``; an exported program
  through ``torch.export.save`` / ``torch.export.load``.
- Flax NNX: ``nnx.state`` through ``flax.serialization`` (msgpack) and through orbax, BatchNorm running
  statistics (``nnx.BatchStat``) included, float32 and float64.

Every reload goes into a module built with a different seed, and each test first checks that this
module's output differs, so a reload that silently did nothing fails.
"""
from __future__ import annotations

import numpy as np
import pytest

import reference
from attnport import cases

from helpers import get_bridge, make_input

# One spec per family with non-default arguments, so a config that dropped one would change the output.
SE_SPEC = reference.SE.efficientnet(96, in_channels=16)                          # explicit R = 4, silu
SE_SPEC_2 = reference.SE(16, activation="gelu_tanh", gate="hard_sigmoid_keras2", bias=False)
ECA_SPEC = reference.ECA.circular(128)
ECA_SPEC_2 = reference.ECA(128, kernel_size=9)
CBAM_TIMM = reference.CBAM.timm(40)                                              # mean+max, no MLP bias
CBAM_OFFICIAL = reference.CBAM.official(40)
CBAM_ODD = reference.CBAM(32, bn_eps=1e-3, spatial_order=("mean", "max"), gate="hard_sigmoid_keras2")
FAMILY_SPECS = [SE_SPEC_2, ECA_SPEC, CBAM_OFFICIAL]

KERAS_CASES = [
    pytest.param(spec, df, dtype, id=f"{cases.spec_id(spec)}-{df}-{dtype}")
    for spec, df, dtype in [
        (SE_SPEC, "channels_last", "float32"),
        (SE_SPEC_2, "channels_first", "float32"),
        (ECA_SPEC, "channels_last", "float32"),
        (ECA_SPEC_2, "channels_first", "float32"),
        (CBAM_TIMM, "channels_last", "float32"),
        (CBAM_OFFICIAL, "channels_first", "float32"),
        (CBAM_ODD, "channels_first", "float64"),
    ]
]
FAMILY_DTYPE_CASES = [pytest.param(spec, dtype, id=f"{cases.spec_id(spec)}-{dtype}")
                      for spec in FAMILY_SPECS for dtype in ("float32", "float64")]
SHAPES = ((2, (5, 6)), (1, (3, 3)))  # two spatial sizes through the same saved model


def _inputs(spec, dtype, data_format="channels_last"):
    return [make_input(spec, n, hw, dtype, data_format, seed=10 + i) for i, (n, hw) in enumerate(SHAPES)]


def _assert_params_equal(exported, params):
    assert set(exported) == set(params)
    for name, value in params.items():
        assert exported[name].dtype == value.dtype, name
        np.testing.assert_array_equal(exported[name], value, err_msg=name)


# --------------------------------------------------------------------------------------------- Keras

def _keras_model(spec, data_format, dtype, seed):
    """keras.Input(any H, W) -> the layer, named "attn"; layer weights from Keras' seeded initializer."""
    tf_impl = get_bridge("tf")
    import keras

    kwargs = {k: getattr(spec, k) for k in spec.__dataclass_fields__ if k != "channels"}
    c = spec.channels
    inputs = keras.Input((None, None, c) if data_format == "channels_last" else (c, None, None), dtype=dtype)
    layer = tf_impl.MODULES[spec.kind](**kwargs, data_format=data_format, dtype=dtype, name="attn",
                                       kernel_initializer=keras.initializers.GlorotUniform(seed=seed))
    return keras.Model(inputs, layer(inputs))


def _keras_outputs(model, xs):
    import keras
    ys = [keras.ops.convert_to_numpy(model(x, training=False)) for x in xs]
    for x, y in zip(xs, ys):
        assert y.dtype == x.dtype and y.shape == x.shape
    return ys


def _loaded_keras_model(spec, data_format, dtype):
    tf_impl = get_bridge("tf")
    model = _keras_model(spec, data_format, dtype, seed=1)
    params = spec.init_params(seed=7, dtype=dtype)  # non-default weights, BatchNorm statistics included
    tf_impl.load_params(model.get_layer("attn"), params)
    xs = _inputs(spec, dtype, data_format)
    ys = _keras_outputs(model, xs)
    for x, y in zip(xs, ys):  # the model computes the module with these weights
        reference.assert_within(y, reference.forward(spec, params, x, data_format), reference.tolerance(dtype))
    return tf_impl, model, params, xs, ys


def _assert_fresh_differs(model, xs, ys):
    fresh = _keras_outputs(model, xs)
    assert not all(np.array_equal(a, b) for a, b in zip(fresh, ys)), "the fresh model already gives these outputs"


@pytest.mark.parametrize("spec,data_format,dtype", KERAS_CASES)
def test_keras_model_dot_keras_round_trip(spec, data_format, dtype, tmp_path):
    tf_impl, model, params, xs, ys = _loaded_keras_model(spec, data_format, dtype)
    import keras

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    layer = reloaded.get_layer("attn")
    assert type(layer) is tf_impl.MODULES[spec.kind]
    assert layer.spec == spec and layer.data_format == data_format and layer.compute_dtype == dtype
    _assert_params_equal(tf_impl.export_params(layer), params)
    for y, y2 in zip(ys, _keras_outputs(reloaded, xs)):
        np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("spec,data_format,dtype", KERAS_CASES)
def test_keras_weights_h5_round_trip(spec, data_format, dtype, tmp_path):
    tf_impl, model, params, xs, ys = _loaded_keras_model(spec, data_format, dtype)

    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    fresh = _keras_model(spec, data_format, dtype, seed=2)
    _assert_fresh_differs(fresh, xs, ys)
    fresh.load_weights(path)
    _assert_params_equal(tf_impl.export_params(fresh.get_layer("attn")), params)
    for y, y2 in zip(ys, _keras_outputs(fresh, xs)):
        np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("spec,data_format,dtype", KERAS_CASES)
def test_keras_config_round_trip(spec, data_format, dtype):
    tf_impl, model, params, xs, ys = _loaded_keras_model(spec, data_format, dtype)
    import keras

    layer = model.get_layer("attn")
    cls = type(layer)
    assert keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is cls
    assert keras.saving.get_registered_name(cls) == f"attnport>{cls.__name__}"
    # layer: from_config gives the same arguments; built on the same shape, it holds the same variables
    config = layer.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone.build(model.inputs[0].shape)
    assert clone.spec == layer.spec == spec
    clone.set_weights(layer.get_weights())
    _assert_params_equal(tf_impl.export_params(clone), params)
    for x, y in zip(xs, ys):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x, training=False)), y)
    # model: from_config(get_config()) + set_weights, and a full serialize/deserialize of the model
    for rebuilt in (keras.Model.from_config(model.get_config()),
                    keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))):
        _assert_fresh_differs(rebuilt, xs, ys)
        rebuilt.set_weights(model.get_weights())
        for y, y2 in zip(ys, _keras_outputs(rebuilt, xs)):
            np.testing.assert_array_equal(y2, y)


# --------------------------------------------------------------------------------------------- torch

def _torch_outputs(torch_impl, module, spec, dtype):
    return [torch_impl.apply(module, x, df) for df in reference.DATA_FORMATS for x in _inputs(spec, dtype, df)]


@pytest.mark.parametrize("spec,dtype", FAMILY_DTYPE_CASES)
def test_torch_state_dict_round_trip(spec, dtype, tmp_path):
    torch_impl = get_bridge("torch")
    import torch

    params = spec.init_params(seed=7, dtype=dtype)
    module = torch_impl.load_params(torch_impl.build(spec, seed=1, dtype=dtype), params)
    ys = _torch_outputs(torch_impl, module, spec, dtype)
    path = tmp_path / "state_dict.pt"
    torch.save(module.state_dict(), path)

    fresh = torch_impl.build(spec, seed=2, dtype=dtype)
    assert not all(np.array_equal(a, b) for a, b in zip(_torch_outputs(torch_impl, fresh, spec, dtype), ys))
    state = torch.load(path, weights_only=True)
    assert set(state) == set(module.state_dict())
    fresh.load_state_dict(state)  # strict: refuses missing and unexpected keys
    for name, value in module.state_dict().items():
        assert fresh.state_dict()[name].dtype == value.dtype, name
        assert torch.equal(fresh.state_dict()[name], value), name
    _assert_params_equal(torch_impl.export_params(fresh), params)
    for y, y2 in zip(ys, _torch_outputs(torch_impl, fresh, spec, dtype)):
        np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("spec", [pytest.param(s, id=cases.spec_id(s)) for s in FAMILY_SPECS])
def test_torch_exported_program_round_trip(spec, tmp_path):
    torch_impl = get_bridge("torch")
    import torch

    module = torch_impl.load_params(torch_impl.build(spec, seed=1), spec.init_params(seed=7))
    x = torch.from_numpy(make_input(spec, 2, (5, 6), "float32", "channels_first", seed=3))
    dim = torch.export.Dim.DYNAMIC
    program = torch.export.export(module, (x,), dynamic_shapes={"x": {0: dim, 2: dim, 3: dim}})
    path = tmp_path / "program.pt2"
    torch.export.save(program, path)
    reloaded = torch.export.load(path).module()
    with torch.no_grad():
        for n, hw in ((2, (5, 6)), (3, (4, 9))):
            t = torch.from_numpy(make_input(spec, n, hw, "float32", "channels_first", seed=n))
            y = module(t).numpy()
            np.testing.assert_array_equal(reloaded(t).numpy(), y)


# --------------------------------------------------------------------------------------------- Flax NNX

def _flax_case(spec, dtype):
    jax_impl = get_bridge("jax")
    params = spec.init_params(seed=7, dtype=dtype)
    module = jax_impl.load_params(jax_impl.build(spec, seed=1, dtype=dtype), params)
    ys = [jax_impl.apply(module, x) for x in _inputs(spec, dtype)]
    fresh = jax_impl.build(spec, seed=2, dtype=dtype)
    assert not all(np.array_equal(jax_impl.apply(fresh, x), y) for x, y in zip(_inputs(spec, dtype), ys))
    return jax_impl, params, module, ys, fresh


def _assert_flax_restored(jax_impl, spec, dtype, params, module, ys, fresh):
    import jax
    from flax import nnx

    with jax_impl.x64_scope(dtype):
        for kind in (nnx.Param, nnx.BatchStat):
            want = nnx.to_pure_dict(nnx.state(module, kind))
            got_state = nnx.state(fresh, kind)
            got = nnx.to_pure_dict(got_state)
            assert jax.tree.structure(got) == jax.tree.structure(want)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                assert np.asarray(a).dtype == np.asarray(b).dtype == np.dtype(dtype)
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            assert all(isinstance(v, kind) for v in jax.tree.leaves(got_state, is_leaf=lambda v: isinstance(
                v, nnx.Variable)))
        if spec.kind == "cbam" and spec.spatial_norm:
            assert len(jax.tree.leaves(nnx.state(fresh, nnx.BatchStat))) == 2  # bn.mean, bn.var
    _assert_params_equal(jax_impl.export_params(fresh), params)
    for x, y in zip(_inputs(spec, dtype), ys):
        np.testing.assert_array_equal(jax_impl.apply(fresh, x), y)


@pytest.mark.parametrize("spec,dtype", FAMILY_DTYPE_CASES)
def test_flax_state_msgpack_round_trip(spec, dtype, tmp_path):
    jax_impl, params, module, ys, fresh = _flax_case(spec, dtype)
    import jax
    import jax.numpy as jnp
    from flax import nnx, serialization

    path = tmp_path / "state.msgpack"
    with jax_impl.x64_scope(dtype):
        path.write_bytes(serialization.to_bytes(nnx.to_pure_dict(nnx.state(module))))
        target = nnx.state(fresh)
        restored = serialization.from_bytes(nnx.to_pure_dict(target), path.read_bytes())
        nnx.replace_by_pure_dict(target, jax.tree.map(jnp.asarray, restored))
        nnx.update(fresh, target)
    _assert_flax_restored(jax_impl, spec, dtype, params, module, ys, fresh)


ORBAX_CASES = [pytest.param(s, d, id=f"{cases.spec_id(s)}-{d}") for s in (CBAM_OFFICIAL, SE_SPEC)
               for d in ("float32", "float64")]


@pytest.mark.parametrize("spec,dtype", ORBAX_CASES)
def test_flax_state_orbax_round_trip(spec, dtype, tmp_path):
    jax_impl, params, module, ys, fresh = _flax_case(spec, dtype)
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:  # orbax comes with flax; a missing orbax is a broken install, not a skip
        raise AssertionError(f"orbax-checkpoint is not importable: {e}") from e
    from flax import nnx

    path = tmp_path / "checkpoint"
    with jax_impl.x64_scope(dtype):
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(path, nnx.state(module))
            checkpointer.wait_until_finished()
        abstract = nnx.state(nnx.eval_shape(lambda: jax_impl.build(spec, seed=2, dtype=dtype)))
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(path, abstract)
        nnx.update(fresh, restored)
    _assert_flax_restored(jax_impl, spec, dtype, params, module, ys, fresh)
