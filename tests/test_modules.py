"""The idiomatic module APIs: the article's Keras calls, configs, specs, native activations."""
import numpy as np
import pytest

import reference
from reference import activations as ref_act

from helpers import BACKEND_NAMES, get_bridge, make_input


@pytest.fixture(scope="module")
def keras_mods():
    tf_impl = get_bridge("tf")
    import keras
    return tf_impl, keras


# --- the article, in tf_impl ----------------------------------------------------------------------

def test_article_se_block(keras_mods):
    tf_impl, keras = keras_mods
    inputs = keras.Input([56, 56, 24])
    outputs = tf_impl.se_block(inputs, ratio=4)
    model = keras.Model(inputs, outputs)
    assert tuple(outputs.shape) == (None, 56, 56, 24)
    assert model.count_params() == 318
    layer = model.layers[-1]
    assert layer.spec == reference.SE(24, ratio=4)
    assert tuple(layer.fc1.kernel.shape) == (24, 6) and tuple(layer.fc2.kernel.shape) == (6, 24)


@pytest.mark.parametrize("kwargs", [dict(b=1, gama=2), dict(b=1, gamma=2), dict()])
def test_article_eca_block(keras_mods, kwargs):
    tf_impl, keras = keras_mods
    inputs = keras.Input([26, 26, 512])
    outputs = tf_impl.eca_block(inputs, **kwargs)
    model = keras.Model(inputs, outputs)
    assert tuple(outputs.shape) == (None, 26, 26, 512)
    assert model.count_params() == 5
    assert tuple(model.layers[-1].conv.kernel.shape) == (5, 1, 1)


def test_eca_block_gama_gamma_conflict(keras_mods):
    tf_impl, keras = keras_mods
    with pytest.raises(ValueError, match="gama=2 and gamma=3"):
        tf_impl.eca_block(keras.Input([4, 4, 64]), gama=2, gamma=3)
    # gamma actually changes k: C=512 with gamma=1 gives t=10 -> k=11
    model = keras.Model(i := keras.Input([4, 4, 512]), tf_impl.eca_block(i, gamma=1))
    assert model.count_params() == 11


@pytest.mark.parametrize("make", ["se", "eca"])
def test_keras_config_round_trip(keras_mods, make):
    tf_impl, keras = keras_mods
    layer = (tf_impl.SEBlock(ratio=2, activation="silu", gate="hard_sigmoid", data_format="channels_first")
             if make == "se" else tf_impl.ECABlock(kernel_size=7, data_format="channels_first"))
    x = np.random.default_rng(0).standard_normal((2, 16, 3, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)), y)
    assert clone.spec == layer.spec


def test_keras_spec_before_build(keras_mods):
    tf_impl, _ = keras_mods
    with pytest.raises(ValueError, match="not built yet"):
        tf_impl.SEBlock().spec


@pytest.mark.parametrize("kwargs,field", [(dict(ratio=0), "ratio"), (dict(activation="tanh"), "activation"),
                                          (dict(data_format="NHWC"), "data_format")])
def test_keras_layer_validates_arguments_eagerly(keras_mods, kwargs, field):
    tf_impl, _ = keras_mods
    with pytest.raises(ValueError, match=field):
        tf_impl.SEBlock(**kwargs)


def test_keras_layer_rejects_other_channel_count_after_build(keras_mods):
    tf_impl, _ = keras_mods
    layer = tf_impl.SEBlock()
    layer(np.zeros((1, 2, 2, 8), "float32"))
    with pytest.raises(ValueError, match="8 channels.*has 4"):
        layer(np.zeros((1, 2, 2, 4), "float32"))


# --- torch ------------------------------------------------------------------------------------

def test_torch_modules_and_channels_last_memory_format():
    torch_impl = get_bridge("torch")
    import torch
    for module in (torch_impl.SEBlock(24), torch_impl.ECABlock(512), torch_impl.ECABlock(24, kernel_size=7)):
        spec = module.spec
        assert sum(p.numel() for p in module.parameters()) == spec.num_params()
        torch_impl.load_params(module, spec.init_params())
        x = torch.from_numpy(make_input(spec, 2, (5, 3), "float32", "channels_first"))
        y = module(x)
        y_cl = module(x.contiguous(memory_format=torch.channels_last))
        assert y_cl.is_contiguous(memory_format=torch.channels_last)  # layout preserved
        oracle = reference.forward(spec, spec.init_params(), x.numpy(), "channels_first")
        for out in (y, y_cl):  # pooling order differs between layouts, so compare each to the oracle
            reference.assert_within(out.detach().numpy(), oracle, reference.tolerance("float32"))
    assert torch_impl.SEBlock(24).spec.num_params() == 318
    with pytest.raises(ValueError, match="24 channels.*has 12"):
        torch_impl.SEBlock(24)(torch.zeros(1, 12, 2, 2))


# --- flax ---------------------------------------------------------------------------------------

def test_nnx_modules():
    jax_impl = get_bridge("jax")
    from flax import nnx
    import jax
    module = jax_impl.SEBlock(24, rngs=nnx.Rngs(0))
    assert sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(module, nnx.Param))) == 318
    eca = jax_impl.ECABlock(512, rngs=nnx.Rngs(0))
    assert eca.spec.kernel_size == 5 and eca.conv.kernel.shape == (5, 1, 1) and eca.conv.bias is None
    with pytest.raises(ValueError, match="24 channels.*has 12"):
        module(np.zeros((1, 2, 2, 12), np.float32))
    y = nnx.jit(lambda m, x: m(x))(eca, np.ones((1, 2, 2, 512), np.float32))
    assert y.shape == (1, 2, 2, 512)


# --- each backend's native activations equal the reference formulas --------------------------------

@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_native_activations_match_reference(backend):
    bridge = get_bridge(backend)
    import importlib
    native = importlib.import_module(f"{bridge.__name__}.activations")
    x = np.concatenate([np.linspace(-8, 8, 801), [-3.0, 3.0, 0.0, -50.0, 50.0]])
    to_np = {"torch": lambda f: f(__import__("torch").from_numpy(x)).numpy(),
             "tf": lambda f: np.asarray(f(x)),
             "jax": lambda f: np.asarray(f(x.astype(np.float32))).astype(np.float64)}[backend]
    tol = reference.tolerance("float32" if backend == "jax" else "float64")
    for table, ref in ((native.ACTIVATIONS, ref_act.ACTIVATIONS), (native.GATES, ref_act.GATES)):
        assert set(table) == set(ref)
        for name, fn in table.items():
            reference.assert_within(to_np(fn), ref[name](x), tol, what=f"{backend} {name}")
