"""CBAM's spatial order and BatchNorm, circular ECA, the added activations, and spec validation."""
import dataclasses
import math

import numpy as np
import pytest

import reference
from reference import activations as act

from helpers import get_bridge

X = np.random.default_rng(5).standard_normal((2, 6, 5, 40))


# --- the oracle for CBAM and circular ECA against loops written from the equations ---------------

def loop_cbam(spec, p, x):
    n, h, w, c = x.shape
    gate = {"sigmoid": lambda v: 1 / (1 + math.exp(-v)), "hard_sigmoid": lambda v: min(max(v + 3, 0), 6) / 6,
            "hard_sigmoid_keras2": lambda v: min(max(0.2 * v + 0.5, 0), 1)}[spec.gate]
    b1 = p.get("fc1.bias", np.zeros(spec.reduced_channels))
    b2 = p.get("fc2.bias", np.zeros(c))
    k, pad = spec.spatial_kernel, spec.spatial_kernel // 2
    y = np.empty_like(x)
    for i in range(n):
        def mlp(v):
            hid = [max(sum(p["fc1.weight"][r, j] * v[j] for j in range(c)) + b1[r], 0.0)
                   for r in range(spec.reduced_channels)]
            return [sum(p["fc2.weight"][j, r] * hid[r] for r in range(len(hid))) + b2[j] for j in range(c)]
        avg = mlp([x[i, :, :, j].mean() for j in range(c)])
        mx = mlp([x[i, :, :, j].max() for j in range(c)])
        x1 = x[i] * np.array([gate(a + m) for a, m in zip(avg, mx)])
        maps = {"max": x1.max(axis=-1), "mean": x1.mean(axis=-1)}
        s = [maps[name] for name in spec.spatial_order]
        for a in range(h):
            for b in range(w):
                z = sum(p["conv.weight"][0, ch, di, dj] * s[ch][a + di - pad, b + dj - pad]
                        for ch in range(2) for di in range(k) for dj in range(k)
                        if 0 <= a + di - pad < h and 0 <= b + dj - pad < w)
                if spec.spatial_norm:
                    z = ((z - p["bn.running_mean"][0]) / math.sqrt(p["bn.running_var"][0] + spec.bn_eps)
                         * p["bn.weight"][0] + p["bn.bias"][0])
                y[i, a, b] = x1[a, b] * gate(z)
    return y


@pytest.mark.parametrize("spec", [reference.CBAM.official(20), reference.CBAM.timm(20),
                                  reference.CBAM(6, ratio=2, spatial_kernel=3, spatial_norm=False,
                                                 gate="hard_sigmoid_keras2", mlp_bias=False)])
def test_cbam_oracle_matches_loops(spec):
    p = spec.init_params(seed=2, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 4, 3, spec.channels))
    np.testing.assert_allclose(reference.forward(spec, p, x), loop_cbam(spec, p, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels,k", [(1, 3), (3, 9), (7, 3), (10, 5)])
def test_circular_eca_oracle_matches_loop(channels, k):
    spec = reference.ECA(channels, kernel_size=k, padding_mode="circular")
    p = spec.init_params(seed=1, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 2, channels))
    s = x.mean(axis=(1, 2))
    z = np.array([[sum(p["conv.weight"][0, 0, j] * s[i, (c + j - k // 2) % channels] for j in range(k))
                   for c in range(channels)] for i in range(2)])
    np.testing.assert_allclose(reference.forward(spec, p, x), x / (1 + np.exp(-z))[:, None, None, :], rtol=1e-13)


def test_circular_and_zero_padding_differ_only_at_the_edges():
    zeros, circ = reference.ECA(16, kernel_size=5), reference.ECA(16, kernel_size=5, padding_mode="circular")
    p = zeros.init_params(seed=0, dtype=np.float64)
    x = X[..., :16]
    diff = np.abs(reference.forward(zeros, p, x) - reference.forward(circ, p, x)).max(axis=(0, 1, 2))
    assert np.all(diff[2:-2] == 0) and np.all(diff[[0, 1, -2, -1]] > 1e-6)


# --- spatial order and the official <-> timm port ------------------------------------------------

def test_spatial_orders_differ_and_swap_maps_one_onto_the_other():
    official = reference.CBAM.official(40)
    p = official.init_params(seed=4, dtype=np.float64)
    y = reference.forward(official, p, X)
    as_timm_order = dataclasses.replace(official, spatial_order=("mean", "max"))
    wrong = reference.forward(as_timm_order, p, X)  # same weights, other order: a silent port bug
    assert np.abs(wrong - y).max() > 1e-3
    spec2, p2 = reference.swap_spatial_order(official, p)
    assert spec2.spatial_order == ("mean", "max")
    np.testing.assert_array_equal(p2["conv.weight"][0, 0], p["conv.weight"][0, 1])
    reference.assert_within(reference.forward(spec2, p2, X), y, reference.tolerance("float64"))
    back_spec, back = reference.swap_spatial_order(spec2, p2)
    assert back_spec == official and all(np.array_equal(back[k], p[k]) for k in p)


@pytest.mark.parametrize("backend", ["torch", "tf", "jax"])
def test_swapped_weights_work_in_every_backend(backend):
    bridge = get_bridge(backend)
    spec, p = reference.CBAM.official(40), reference.CBAM.official(40).init_params(seed=4)
    spec2, p2 = reference.swap_spatial_order(spec, p)
    x = X.astype(np.float32)
    y1 = bridge.apply(bridge.load_params(bridge.build(spec), p), x)
    y2 = bridge.apply(bridge.load_params(bridge.build(spec2), p2), x)
    reference.assert_within(y2, y1, reference.pair_tolerance("float32"))


# --- BatchNorm: epsilon and momentum are carried ----------------------------------------------------

def test_bn_epsilon_changes_the_output_beyond_tolerance():
    spec = reference.CBAM(40)
    p = spec.init_params(seed=0, dtype=np.float64)
    p["bn.running_var"] = np.array([1e-3])  # small variance: eps matters, as after real training
    y5 = reference.forward(spec, p, X)
    y3 = reference.forward(dataclasses.replace(spec, bn_eps=1e-3), p, X)
    assert not reference.within(y3, y5, reference.tolerance("float32"))


@pytest.mark.parametrize("backend", ["torch", "tf", "jax"])
def test_bn_epsilon_and_momentum_reach_the_native_layer(backend):
    bridge = get_bridge(backend)
    module = bridge.build(reference.CBAM(40, bn_eps=1e-3, bn_momentum=0.01))
    bn = module.bn
    eps = {"torch": lambda: bn.eps, "tf": lambda: bn.epsilon, "jax": lambda: bn.epsilon}[backend]()
    momentum = {"torch": lambda: bn.momentum, "tf": lambda: bn.momentum, "jax": lambda: bn.momentum}[backend]()
    assert eps == 1e-3
    # torch's momentum m is Keras'/Flax's 1 - m (docs/reference/modules.md "Presets", reference.bn_momentum)
    assert momentum == pytest.approx(0.01 if backend == "torch" else 0.99, abs=1e-15)


@pytest.mark.parametrize("backend", ["torch", "tf", "jax"])
def test_backends_carry_bn_epsilon(backend):
    bridge = get_bridge(backend)
    base = reference.CBAM(40)
    p = base.init_params(seed=0)
    p["bn.running_var"] = np.array([1e-3], np.float32)
    x = X.astype(np.float32)
    for eps in (1e-5, 1e-3):
        spec = dataclasses.replace(base, bn_eps=eps)
        y = bridge.apply(bridge.load_params(bridge.build(spec), p), x)
        reference.assert_within(y, reference.forward(spec, p, x), reference.tolerance("float32"))


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,field", [
    (dict(channels=8, spatial_kernel=6), ValueError, "spatial_kernel"),
    (dict(channels=8, spatial_kernel=0), ValueError, "spatial_kernel"),
    (dict(channels=0), ValueError, "channels"),
    (dict(channels=-4), ValueError, "channels"),
    (dict(channels=8, gate="softmax"), ValueError, "gate"),
    (dict(channels=8, spatial_order=("max", "max")), ValueError, "spatial_order"),
    (dict(channels=8, spatial_order=("mean",)), ValueError, "spatial_order"),
    (dict(channels=8, spatial_order="maxmean"), ValueError, "spatial_order"),
    (dict(channels=8, bn_eps=0.0), ValueError, "bn_eps"),
    (dict(channels=8, bn_momentum=1.5), ValueError, "bn_momentum"),
    (dict(channels=8, mlp_bias=1), TypeError, "mlp_bias"),
    (dict(channels=8, activation="relu"), TypeError, "activation"),  # CBAM's MLP is ReLU by definition
])
def test_cbam_spec_rejects(kwargs, exc, field):
    with pytest.raises(exc, match=field):
        reference.CBAM(**kwargs)


def test_eca_rejects_unknown_padding_mode():
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        reference.ECA(16, padding_mode="reflect")


def test_cbam_param_count_in_every_framework():
    spec = reference.CBAM.official(40)  # R = 2
    expected = (40 * 2 + 2) + (2 * 40 + 40) + 2 * 7 * 7 + 4
    assert spec.num_params() == expected == 304
    torch_impl = get_bridge("torch")
    m = torch_impl.build(spec)
    assert sum(t.numel() for k, t in m.state_dict().items() if "num_batches" not in k) == expected
    tf_impl = get_bridge("tf")
    assert tf_impl.build(spec).count_params() == expected


# --- activations added for the presets --------------------------------------------------------------

def test_added_activation_formulas_at_known_points():
    x = np.array([-3.0, 0.0, 1.0, 2.5, 3.0])
    np.testing.assert_allclose(act.hard_sigmoid_keras2(x), [0.0, 0.5, 0.7, 1.0, 1.0])  # clip(0.2x + 0.5, 0, 1)
    np.testing.assert_allclose(act.hard_swish(x), [0.0, 0.0, 2 / 3, 2.5 * 5.5 / 6, 3.0])
    # GELU(x) = x * Phi(x): Phi(1) = 0.841344746..., Phi(-3) = 0.001349898...
    np.testing.assert_allclose(act.gelu(np.array([1.0, -3.0])), [0.8413447460685429, -3 * 0.0013498980316301],
                               rtol=1e-12)
    assert abs(act.gelu_tanh(np.array([1.0]))[0] - 0.8413447460685429) < 2e-4  # the approximation is close
    assert act.gelu_tanh(np.array([1.0]))[0] != act.gelu(np.array([1.0]))[0]   # but not equal


def test_keras2_hard_sigmoid_is_a_different_function():
    x = np.linspace(-4, 4, 81)
    assert np.abs(act.hard_sigmoid_keras2(x) - act.hard_sigmoid(x)).max() > 0.05
