"""`attnport.load_into`: an attnport file's modules into a user's own Keras model or NNX module, by prefix.

The models here are written the way a user writes them (plain ``Dense`` / ``nnx.Linear`` layers, lists of
blocks), not attnport's layers. Each loaded module must compute what the float64 oracle computes with the
file's weights; every refusal must name the entry and leave every variable as it was.
"""
import numpy as np
import pytest

import attnport
import reference

from helpers import get_bridge

SE = reference.SE.timm(32)                  # R = 8
ECA = reference.ECA(16, kernel_size=3)
CBAM = reference.CBAM.official(32)          # R = 2, max then mean, BatchNorm eps 1e-5
BUNDLE = {"layer1.0.se": (SE, SE.init_params(seed=1)), "layer2.0.eca": (ECA, ECA.init_params(seed=2)),
          "layer3.0.cbam": (CBAM, CBAM.init_params(seed=3))}
X = {c: np.random.default_rng(c).standard_normal((2, 5, 6, c)).astype(np.float32) for c in (16, 32)}


@pytest.fixture(params=["canonical", "keras", "flax"])
def converted(request, tmp_path):
    """The bundle as `attnport convert --to LAYOUT` writes it (every layout loads into every framework)."""
    path = tmp_path / f"{request.param}.safetensors"
    attnport.save(path, BUNDLE, layout=request.param)
    return path


def expected(prefix):
    spec, params = BUNDLE[prefix]
    return reference.forward(spec, params, X[spec.channels])


def values(variables) -> list:
    """NumPy copies of Keras variables (``.numpy()``) or JAX arrays."""
    return [np.array(v.numpy() if hasattr(v, "numpy") else v) for v in variables]


# --- Keras: a user's own layers --------------------------------------------------------------------------

def keras_ports():
    get_bridge("tf")
    import keras
    from keras import ops

    class UserSE(keras.layers.Layer):
        def __init__(self, channels, reduced, **kw):
            super().__init__(**kw)
            self.fc1 = keras.layers.Dense(reduced, activation="relu")
            self.fc2 = keras.layers.Dense(channels, activation="sigmoid")

        def call(self, x):  # [N, H, W, C]
            return x * self.fc2(self.fc1(ops.mean(x, axis=(1, 2))))[:, None, None, :]

    class UserECA(keras.layers.Layer):
        def __init__(self, k, **kw):
            super().__init__(**kw)
            self.conv = keras.layers.Conv1D(1, k, padding="same", use_bias=False)

        def call(self, x):
            s = ops.mean(x, axis=(1, 2))[:, :, None]  # [N, C, 1]
            return x * ops.sigmoid(self.conv(s))[:, None, None, :, 0]

    class UserCBAM(keras.layers.Layer):
        def __init__(self, channels, reduced, **kw):
            super().__init__(**kw)
            self.fc1 = keras.layers.Dense(reduced, activation="relu")
            self.fc2 = keras.layers.Dense(channels)
            self.conv = keras.layers.Conv2D(1, 7, padding="same", use_bias=False)
            self.bn = keras.layers.BatchNormalization(epsilon=1e-5)

        def call(self, x):
            mlp = lambda v: self.fc2(self.fc1(v))  # noqa: E731
            x = x * ops.sigmoid(mlp(ops.mean(x, axis=(1, 2))) + mlp(ops.max(x, axis=(1, 2))))[:, None, None, :]
            s = ops.stack([ops.max(x, axis=-1), ops.mean(x, axis=-1)], axis=-1)
            return x * ops.sigmoid(self.bn(self.conv(s), training=False))

    class Holder(keras.layers.Layer):
        """A block holding one attention layer under the attribute the file's prefix ends in."""

        def __init__(self, **attention):
            super().__init__()
            for name, layer in attention.items():
                setattr(self, name, layer)

    class UserNet(keras.Model):
        """layer1[0].se, layer2[0].eca, layer3[0].cbam: the file's prefixes, as a user mirrors a torch net."""

        def __init__(self):
            super().__init__()
            self.stem = keras.layers.Conv2D(32, 3, padding="same")
            self.layer1 = [Holder(se=UserSE(32, 8))]
            self.layer2 = [Holder(eca=UserECA(3))]
            self.layer3 = [Holder(cbam=UserCBAM(32, 2))]

        def build(self, input_shape):  # the layers build on the first call
            pass

        def call(self, x):
            return self.layer3[0].cbam(self.layer2[0].eca(self.layer1[0].se(self.stem(x))))

    return keras, UserSE, UserECA, UserCBAM, UserNet


def keras_net():
    keras, _, _, _, UserNet = keras_ports()
    net = UserNet()
    net(np.zeros((1, 5, 6, 32), np.float32))
    return net


def test_keras_model_mirroring_the_file_gets_every_module(converted):
    net = keras_net()
    stem = values(net.stem.weights)
    assert len(stem) == 2
    report = attnport.load_into(net, converted)
    assert report.unused == [] and report.untouched == []
    assert report.assigned["layer1.0.se.fc1.kernel"] == "layer1.0.se.fc1.kernel"
    assert report.assigned["layer3.0.cbam.bn.moving_variance"] == "layer3.0.cbam.bn.moving_variance"
    assert len(report.assigned) == 4 + 1 + 9
    modules = {"layer1.0.se": net.layer1[0].se, "layer2.0.eca": net.layer2[0].eca, "layer3.0.cbam": net.layer3[0].cbam}
    for prefix, layer in modules.items():
        x = X[BUNDLE[prefix][0].channels]
        reference.assert_within(np.asarray(layer(x)), expected(prefix), reference.tolerance("float32"), what=prefix)
    assert all(np.array_equal(a, b) for a, b in zip(stem, values(net.stem.weights)))  # not a module of the file
    assert str(report) == f"assigned 14 variables from {converted}"


def test_keras_layer_takes_one_module_by_prefix(tmp_path):
    _, UserSE, _, UserCBAM, _ = keras_ports()
    path = tmp_path / "keras.safetensors"
    attnport.save(path, BUNDLE, layout="keras")
    cbam = UserCBAM(32, 2)
    cbam(X[32])
    report = attnport.load_into(cbam, path, prefix="layer3.0.cbam")
    assert sorted(report.assigned) == sorted(["fc1.kernel", "fc1.bias", "fc2.kernel", "fc2.bias", "conv.kernel",
                                              "bn.gamma", "bn.beta", "bn.moving_mean", "bn.moving_variance"])
    assert report.assigned["conv.kernel"] == "layer3.0.cbam.conv.kernel" and report.untouched == []
    reference.assert_within(np.asarray(cbam(X[32])), expected("layer3.0.cbam"), reference.tolerance("float32"))


def test_keras_prefixes_put_modules_anywhere_and_name_what_is_left(tmp_path):
    """A Sequential of the user's layers (``layers.N``); an entry with no variable and a variable the file does not
    have are reported."""
    keras, UserSE, _, _, _ = keras_ports()
    from gallery.keras_ports import ExtraWeightSE

    path = tmp_path / "keras.safetensors"
    bundle = {"a.se": (SE, SE.init_params(seed=4)), "b.se": (SE, SE.init_params(seed=5)), "c.eca": BUNDLE["layer2.0.eca"]}
    attnport.save(path, bundle, layout="keras")
    seq = keras.Sequential([keras.Input((5, 6, 32)), UserSE(32, 8), ExtraWeightSE(32, 8, used=False)])
    report = attnport.load_into(seq, path, prefixes={"a.se": "layers.0", "b.se": "layers.1", "c.eca": "layers.0"})
    assert report.assigned["layers.0.fc2.bias"] == "a.se.fc2.bias"
    assert report.assigned["layers.1.fc1.kernel"] == "b.se.fc1.kernel" and len(report.assigned) == 8
    assert report.untouched == ["layers.1.temperature"] and report.unused == ["c.eca.conv.kernel"]
    assert str(report) == (f"assigned 8 variables from {path}; 1 file entries found no variable: 'c.eca.conv.kernel'; "
                           "1 variables got nothing: 'layers.1.temperature'")
    for layer, (spec, params) in zip(seq.layers, (bundle["a.se"], bundle["b.se"])):
        reference.assert_within(np.asarray(layer(X[32])), reference.forward(spec, params, X[32]),
                                reference.tolerance("float32"))


def test_keras_mismatched_shape_is_named_and_nothing_is_written(tmp_path):
    _, UserSE, _, _, _ = keras_ports()
    path = tmp_path / "keras.safetensors"
    attnport.save(path, BUNDLE, layout="keras")
    se = UserSE(32, 4)  # R = 4 where the file has 8: fc2's bias [32] alone fits
    se(X[32])
    before = values(se.weights)
    with pytest.raises(attnport.LoadIntoError) as info:
        attnport.load_into(se, path, prefix="layer1.0.se")
    message = str(info.value)
    assert "shape mismatch for layer1.0.se.fc1.kernel -> fc1.kernel: expected (32, 4), got (32, 8)" in message
    assert "layer1.0.se.fc2.kernel -> fc2.kernel: expected (4, 32), got (8, 32)" in message
    assert "fc2.bias" not in message and "nothing was written" in message
    assert all(np.array_equal(a, b) for a, b in zip(before, values(se.weights)))


def test_keras_strict_refuses_a_partial_load(tmp_path):
    _, _, _, _, _ = keras_ports()
    from gallery.keras_ports import ExtraWeightSE

    path = tmp_path / "keras.safetensors"
    attnport.save(path, BUNDLE, layout="keras")
    se = ExtraWeightSE(32, 8, used=True)
    se(X[32])
    before = values(se.weights)
    with pytest.raises(attnport.LoadIntoError, match=r"strict: nothing was written; .*'temperature'"):
        attnport.load_into(se, path, prefix="layer1.0.se", strict=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, values(se.weights)))


# --- Flax NNX: a user's own modules ------------------------------------------------------------------------

def nnx_ports():
    get_bridge("jax")
    import jax.numpy as jnp
    from flax import nnx

    class UserSE(nnx.Module):
        def __init__(self, channels, reduced, rngs):
            self.fc1 = nnx.Linear(channels, reduced, rngs=rngs)
            self.fc2 = nnx.Linear(reduced, channels, rngs=rngs)

        def __call__(self, x):
            return x * nnx.sigmoid(self.fc2(nnx.relu(self.fc1(jnp.mean(x, axis=(1, 2))))))[:, None, None, :]

    class UserECA(nnx.Module):
        def __init__(self, k, rngs):
            self.conv = nnx.Conv(1, 1, (k,), padding="SAME", use_bias=False, rngs=rngs)

        def __call__(self, x):
            return x * nnx.sigmoid(self.conv(jnp.mean(x, axis=(1, 2))[:, :, None]))[:, None, None, :, 0]

    class UserCBAM(nnx.Module):
        def __init__(self, channels, reduced, rngs):
            self.fc1 = nnx.Linear(channels, reduced, rngs=rngs)
            self.fc2 = nnx.Linear(reduced, channels, rngs=rngs)
            self.conv = nnx.Conv(2, 1, (7, 7), padding="SAME", use_bias=False, rngs=rngs)
            self.bn = nnx.BatchNorm(1, epsilon=1e-5, use_running_average=True, rngs=rngs)

        def __call__(self, x):
            def mlp(v):
                return self.fc2(nnx.relu(self.fc1(v)))

            x = x * nnx.sigmoid(mlp(jnp.mean(x, axis=(1, 2))) + mlp(jnp.max(x, axis=(1, 2))))[:, None, None, :]
            s = jnp.stack([jnp.max(x, axis=-1), jnp.mean(x, axis=-1)], axis=-1)
            return x * nnx.sigmoid(self.bn(self.conv(s)))

    class UserNet(nnx.Module):
        def __init__(self, rngs):
            self.stem = nnx.Conv(3, 32, (3, 3), rngs=rngs)
            self.blocks = nnx.List([UserSE(32, 8, rngs), UserECA(3, rngs)])
            self.cbam = UserCBAM(32, 2, rngs)

    return nnx, UserSE, UserNet


PLACES = {"layer1.0.se": "blocks.0", "layer2.0.eca": "blocks.1", "layer3.0.cbam": "cbam"}


def test_nnx_module_gets_every_module_by_prefixes(converted):
    nnx, _, UserNet = nnx_ports()
    net = UserNet(nnx.Rngs(0))
    stem = values([net.stem.kernel[...], net.stem.bias[...]])
    report = attnport.load_into(net, converted, prefixes=PLACES)
    assert report.unused == [] and report.untouched == [] and len(report.assigned) == 14
    assert report.assigned["cbam.bn.scale"] == "layer3.0.cbam.bn.scale"
    assert report.assigned["blocks.1.conv.kernel"] == "layer2.0.eca.conv.kernel"
    for prefix, module in {"layer1.0.se": net.blocks[0], "layer2.0.eca": net.blocks[1], "layer3.0.cbam": net.cbam}.items():
        x = X[BUNDLE[prefix][0].channels]
        reference.assert_within(np.asarray(module(x)), expected(prefix), reference.tolerance("float32"), what=prefix)
    assert all(np.array_equal(a, b) for a, b in zip(stem, values([net.stem.kernel[...], net.stem.bias[...]])))


def test_nnx_module_variables_it_lacks_or_has_extra_are_reported(tmp_path):
    nnx, _, _ = nnx_ports()
    from gallery.nnx_ports import UnusedVariableSE

    path = tmp_path / "flax.safetensors"
    attnport.save(path, BUNDLE, layout="flax")
    se = UnusedVariableSE(32, 8, nnx.Rngs(0))
    report = attnport.load_into(se, path, prefix="layer1.0.se")
    assert sorted(report.assigned) == ["fc1.bias", "fc1.kernel", "fc2.bias", "fc2.kernel"]
    assert report.untouched == ["ema"] and report.unused == []


def test_nnx_lossy_dtype_and_bad_prefix_are_refused_by_name(tmp_path):
    nnx, UserSE, _ = nnx_ports()
    path = tmp_path / "float64.safetensors"
    spec, params = BUNDLE["layer1.0.se"]
    attnport.save(path, {"se": (spec, {k: v.astype(np.float64) for k, v in params.items()})}, layout="flax")
    se = UserSE(32, 8, nnx.Rngs(0))
    before = values([se.fc1.kernel[...], se.fc2.bias[...]])
    with pytest.raises(attnport.LoadIntoError) as info:
        attnport.load_into(se, path, prefix="se")
    assert "bad dtype for se.fc1.kernel -> fc1.kernel: float64 does not fit losslessly into the variable's float32" \
        in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, values([se.fc1.kernel[...], se.fc2.bias[...]])))
    with pytest.raises(attnport.LoadIntoError, match=r"has no module at 'layer9\.se'; its modules: 'se'"):
        attnport.load_into(se, path, prefix="layer9.se")
    with pytest.raises(attnport.LoadIntoError, match=r"no entry of 'se' found a variable in UserSE; entries: 'se.fc1"):
        attnport.load_into(se, path, prefixes={"se": "elsewhere"})
    with pytest.raises(attnport.LoadIntoError, match="is not a torch nn.Module, a Keras layer or a Flax NNX module"):
        attnport.load_into(object(), path)


def test_a_write_the_framework_refuses_puts_back_the_ones_made(tmp_path, monkeypatch):
    nnx, UserSE, _ = nnx_ports()
    from attnport import backends

    path = tmp_path / "flax.safetensors"
    attnport.save(path, BUNDLE, layout="flax")
    se = UserSE(32, 8, nnx.Rngs(0))
    before = {name: np.array(v) for name, v in (("fc1.kernel", se.fc1.kernel[...]), ("fc1.bias", se.fc1.bias[...]),
                                                ("fc2.kernel", se.fc2.kernel[...]), ("fc2.bias", se.fc2.bias[...]))}
    adapter = backends.adapter("jax")
    real = adapter.variables
    writes = []

    def failing(module):
        out = []
        for name, shape, setter in real(module):
            def put(value, name=name, setter=setter):
                writes.append(name)
                if len(writes) == 3:
                    raise RuntimeError("device out of memory")
                setter(value)
            out.append((name, shape, put))
        return out

    monkeypatch.setattr(adapter, "variables", failing)
    with pytest.raises(RuntimeError, match="device out of memory"):
        attnport.load_into(se, path, prefix="layer1.0.se")
    assert len(writes) > 3  # two written, the third refused, the two put back
    now = {"fc1.kernel": se.fc1.kernel[...], "fc1.bias": se.fc1.bias[...], "fc2.kernel": se.fc2.kernel[...],
           "fc2.bias": se.fc2.bias[...]}
    assert all(np.array_equal(before[k], np.asarray(now[k])) for k in before)


# --- torch: the same helper (a user would mostly use load_state_dict; names are the state dict's) -----------

def test_torch_module_takes_a_module_by_prefix(converted):
    get_bridge("torch")
    import torch

    class UserSE(torch.nn.Module):
        def __init__(self, channels, reduced):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(channels, reduced), torch.nn.Linear(reduced, channels)

        def forward(self, x):  # [N, C, H, W]
            return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))[:, :, None, None]

    net = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 1), UserSE(32, 8))
    report = attnport.load_into(net, converted, prefixes={"layer1.0.se": "1"})
    assert report.assigned == {f"1.{k}": f"layer1.0.se.{k}" for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")}
    with torch.no_grad():
        y = net[1](torch.from_numpy(X[32].transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    reference.assert_within(y, expected("layer1.0.se"), reference.tolerance("float32"))
