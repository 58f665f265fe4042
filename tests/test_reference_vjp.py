"""The reference VJP (`reference.vjp`) against central finite differences of `reference.forward`,
plus its conventions at kinks and ties, its linearity in dy, data formats and input checks."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from reference import activations
from reference.gradients import DERIVATIVES, max_vjp

U = np.finfo(np.float64).eps / 2  # float64 unit roundoff

# --- finite differences ------------------------------------------------------------------------------
#
# The central difference D_h f = (f(t + h) - f(t - h)) / 2h of f(t) = sum(forward(t) * dy) errs by at most
#     h^2 / 6 * |f'''|   (truncation)   +   2 eps_f / 2h   (rounding),
# with eps_f the rounding error of one evaluation of f. We take h = u^(1/3) max(1, |t|) (~5e-6 for
# |t| <= 1), the step that balances the two terms, and form the difference elementwise,
# sum((y+ - y-) * dy). Each y_i comes out of a dozen or so float64 ops (a pooled mean over <= 20 values,
# two small dense layers or a conv of <= 98 taps, a gate, products) with a relative error of at most
# ~10 u, so eps_f <= 10 u sum|y * dy| and the rounding term is at most 10 u sum|y * dy| / h
# <= 10 u^(2/3) sum|y * dy|: that is the per-case `fd_atol` (3e-10 .. 6e-8 here). Truncation is
# h^2 / 6 |f'''| <= 6e-10 |f'''| for |t| <= 12, and on these O(1)-scaled inputs |f'''| stays within
# ~100 |f'|, hence FD_RTOL = 1e-7. (The errors actually seen are <= 7.5e-10.)
FD_RTOL = 1e-7


def fd_atol(spec, params, x, dy, data_format="channels_last"):
    """The rounding part of the central-difference error bound (see above)."""
    return 10 * U ** (2 / 3) * np.sum(np.abs(reference.forward(spec, params, x, data_format) * dy))


# Inputs are resampled until every pre-activation sits at least MARGIN from every kink and every max
# beats the runner-up by MARGIN: a perturbation of h ~ 5e-6 moves each pre-activation by at most
# ~h * (an O(1)-O(10) Lipschitz constant) << MARGIN, so f+ and f- stay on the same smooth piece and
# no argmax changes between them.
MARGIN = 1e-3


def sig(t):
    return 1.0 / (1.0 + math.exp(-t))


def f_diff(spec, params, x, dy, data_format="channels_last"):
    """Central-difference gradients of sum(forward * dy) w.r.t. x and every param, in float64."""
    def f(p, xx):
        return reference.forward(spec, p, xx, data_format)

    def partials(t, evaluate):
        g = np.zeros_like(t)
        for i in np.ndindex(t.shape):
            old = t[i]
            h = U ** (1 / 3) * max(1.0, abs(old))
            t[i] = old + h
            plus, tp = evaluate(), t[i]
            t[i] = old - h
            minus, tm = evaluate(), t[i]
            t[i] = old
            g[i] = np.sum((plus - minus) * dy) / (tp - tm)  # tp - tm: the step actually taken
        return g

    x = x.copy()
    params = {k: v.copy() for k, v in params.items()}
    dx = partials(x, lambda: f(params, x))
    dparams = {name: partials(params[name], lambda: f(params, x)) for name in params}
    return dx, dparams


# --- inputs away from kinks and ties ---------------------------------------------------------------

ACT_KINKS = {"relu": (0.0,), "silu": (), "hard_swish": (-3.0, 3.0), "gelu": (), "gelu_tanh": ()}
GATE_KINKS = {"sigmoid": (), "hard_sigmoid": (-3.0, 3.0), "hard_sigmoid_keras2": (-2.5, 2.5)}


def top2_gap(v):
    """Gap between the largest and second largest entries along the last axis (inf if only one)."""
    if v.shape[-1] < 2:
        return np.array(np.inf)
    top = np.sort(v, axis=-1)
    return top[..., -1] - top[..., -2]


def kinked_values(spec, p, x):
    """(pre-activation values, their kinks) and max-pool gaps, recomputed independently in NumPy."""
    def dense(v, w, b):
        return v @ w.T + (b if b is not None else 0.0)

    if isinstance(spec, reference.ECA):
        return [], []
    if isinstance(spec, reference.SE):
        a = dense(x.mean(axis=(1, 2)), p["fc1.weight"], p.get("fc1.bias"))
        z = dense(activations.ACTIVATIONS[spec.activation](a), p["fc2.weight"], p.get("fc2.bias"))
        return [(a, ACT_KINKS[spec.activation]), (z, GATE_KINKS[spec.gate])], []
    gate = activations.GATES[spec.gate]
    pre, zc = [], 0.0
    for pooled in (x.mean(axis=(1, 2)), x.max(axis=(1, 2))):
        a = dense(pooled, p["fc1.weight"], p.get("fc1.bias"))
        pre.append((a, (0.0,)))
        zc = zc + dense(np.maximum(a, 0), p["fc2.weight"], p.get("fc2.bias"))
    pre.append((zc, GATE_KINKS[spec.gate]))
    x1 = x * gate(zc)[:, None, None, :]
    stat = {"max": x1.max(axis=-1), "mean": x1.mean(axis=-1)}
    k, pad = spec.spatial_kernel, spec.padding
    s = np.pad(np.stack([stat[name] for name in spec.spatial_order], -1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, hh, ww, _ = x.shape
    u = np.zeros((n, hh, ww))
    for i in range(hh):
        for j in range(ww):
            u[:, i, j] = np.einsum("nabc,cab->n", s[:, i:i + k, j:j + k, :], p["conv.weight"][0])
    if spec.spatial_norm:
        u = (u - p["bn.running_mean"]) / np.sqrt(p["bn.running_var"] + spec.bn_eps) * p["bn.weight"] + p["bn.bias"]
    pre.append((u, GATE_KINKS[spec.gate]))
    return pre, [top2_gap(x.transpose(0, 3, 1, 2).reshape(n, spec.channels, -1)), top2_gap(x1)]


def well_posed(spec, p, x):
    """No value within MARGIN of a kink or of a tie; every kinked array of 4+ values visits two pieces."""
    pre, gaps = kinked_values(spec, p, x)
    for values, kinks in pre:
        if kinks and np.min(np.abs(values[..., None] - np.array(kinks))) < MARGIN:
            return False
        if kinks and values.size >= 4 and len(np.unique(np.searchsorted(kinks, values))) < 2:
            return False
    return all(np.min(g) >= MARGIN for g in gaps)


def sample(spec, hw=(3, 4), n=2, seed=0):
    """float64 (params, x, dy), resampled (and rescaled, to reach the flat pieces of hard gates)
    until `well_posed`."""
    for attempt in range(500):
        rng = np.random.default_rng([seed, attempt])
        scale = (1.0, 2.0, 4.0)[attempt % 3]
        p = {k: v * (1.0 if k.startswith("bn.running") else scale)
             for k, v in spec.init_params(seed=seed * 1000 + attempt, dtype=np.float64).items()}
        x = scale * rng.standard_normal((n, *hw, spec.channels))
        if well_posed(spec, p, x):
            return p, x, rng.standard_normal(x.shape)
    raise RuntimeError(f"no well-posed sample for {spec}")


# --- the specs ------------------------------------------------------------------------------------

FD_SPECS = [
    reference.SE(6, reduced_channels=3, activation="relu", gate="sigmoid"),
    reference.SE(6, reduced_channels=3, activation="silu", gate="hard_sigmoid"),
    reference.SE(6, reduced_channels=3, activation="hard_swish", gate="hard_sigmoid_keras2"),
    reference.SE(6, reduced_channels=3, activation="gelu", gate="sigmoid", bias=False),
    reference.SE(6, reduced_channels=3, activation="gelu_tanh", gate="hard_sigmoid"),
    reference.SE(5, ratio=4, activation="relu", bias=False),                     # R = 1
    reference.ECA(6, kernel_size=3),
    reference.ECA(3, kernel_size=7),                                             # k > C, zeros
    reference.ECA(6, kernel_size=5, padding_mode="circular"),
    reference.ECA(3, kernel_size=7, padding_mode="circular"),                    # pad = C: wraps fully
    reference.ECA(2, kernel_size=9, padding_mode="circular"),                    # pad = 2C: wraps twice
    reference.ECA(5, kernel_size=1),
    reference.CBAM(6, reduced_channels=2, spatial_kernel=3, spatial_order=("max", "mean"), spatial_norm=True),
    reference.CBAM(6, reduced_channels=2, spatial_kernel=7, spatial_order=("mean", "max"), spatial_norm=False,
                   mlp_bias=False, gate="hard_sigmoid"),
    reference.CBAM(6, reduced_channels=2, spatial_kernel=7, spatial_order=("max", "mean"), spatial_norm=True,
                   gate="hard_sigmoid_keras2"),
    reference.CBAM(6, reduced_channels=2, spatial_kernel=3, spatial_order=("mean", "max"), spatial_norm=True,
                   mlp_bias=False, bn_eps=1e-3),
    reference.CBAM(1, spatial_kernel=1, spatial_norm=False),                    # C = 1, R = 1
]


def spec_id(spec):
    return repr(spec).replace(" ", "")


def assert_grads_close(got, expected, rtol, atol):
    (dx, dp), (ex, ep) = got, expected
    np.testing.assert_allclose(dx, ex, rtol=rtol, atol=atol, err_msg="dx")
    assert list(dp) == list(ep)
    for name in ep:
        np.testing.assert_allclose(dp[name], ep[name], rtol=rtol, atol=atol, err_msg=name)


# --- tests ------------------------------------------------------------------------------------------

def test_derivative_table_covers_every_activation_and_gate():
    assert set(DERIVATIVES) == set(activations.ACTIVATIONS) | set(activations.GATES)


@pytest.mark.parametrize("name", sorted(DERIVATIVES))
def test_derivatives_match_finite_differences(name):
    f = {**activations.ACTIVATIONS, **activations.GATES}[name]
    kinks = np.array({**ACT_KINKS, **GATE_KINKS}[name] or (np.inf,))
    t = np.linspace(-7.0, 7.0, 1401)
    t = t[np.min(np.abs(t[:, None] - kinks), axis=1) >= MARGIN]  # drop grid points at or near a kink
    h = U ** (1 / 3) * np.maximum(1.0, np.abs(t))
    fd = (f(t + h) - f(t - h)) / ((t + h) - (t - h))
    # scalar f with |f| <= 7: rounding term <= 4 u 7 / h ~ 1e-9 over h ~ 5e-6..4e-5, truncation h^2/6 |f'''| < 1e-9
    np.testing.assert_allclose(DERIVATIVES[name](t), fd, rtol=1e-8, atol=3e-9)


def test_derivatives_at_kinks():
    d = DERIVATIVES
    tiny = np.nextafter(0.0, 1.0)
    np.testing.assert_array_equal(d["relu"](np.array([-tiny, 0.0, tiny])), [0.0, 0.0, 1.0])
    below, above = np.nextafter(3.0, 0.0), np.nextafter(3.0, 4.0)
    np.testing.assert_array_equal(d["hard_sigmoid"](np.array([-above, -3.0, -below, below, 3.0, above])),
                                  [0.0, 0.0, 1 / 6, 1 / 6, 0.0, 0.0])
    in25, out25 = np.nextafter(2.5, 0.0), np.nextafter(2.5, 3.0)
    np.testing.assert_array_equal(d["hard_sigmoid_keras2"](np.array([-out25, -2.5, -in25, in25, 2.5, out25])),
                                  [0.0, 0.0, 0.2, 0.2, 0.0, 0.0])
    # torch: x < -3 -> 0, x > 3 -> 1, else x / 3 + 1/2 (so the closed interval [-3, 3] takes the middle formula)
    np.testing.assert_allclose(d["hard_swish"](np.array([-above, -3.0, 0.0, 3.0, above])),
                               [0.0, -0.5, 0.5, 1.5, 1.0], rtol=0, atol=1e-15)
    for name in ("silu", "gelu", "gelu_tanh"):
        np.testing.assert_allclose(d[name](np.array([0.0])), [0.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(d["sigmoid"](np.array([0.0])), [0.25], rtol=0, atol=1e-15)


def test_vjp_uses_the_kink_rules_end_to_end():
    # SE, C = R = 1, x's mean exactly 0 -> relu pre-activation exactly 0 -> no gradient into fc1.
    p = {"fc1.weight": np.array([[1.0]]), "fc1.bias": np.array([0.0]),
         "fc2.weight": np.array([[1.0]]), "fc2.bias": np.array([3.0])}  # z = relu(0) + 3 = 3: gate kink
    x = np.array([1.0, -1.0]).reshape(1, 1, 2, 1)
    dy = np.array([2.0, 5.0]).reshape(1, 1, 2, 1)
    for gate, g, dz in (("sigmoid", sig(3), sig(3) * (1 - sig(3))),
                        ("hard_sigmoid", 1.0, 0.0)):  # hard_sigmoid'(3) = 0
        dx, dp = reference.vjp(reference.SE(1, reduced_channels=1, gate=gate), p, x, dy)
        assert dp["fc1.weight"][0, 0] == 0.0 and dp["fc1.bias"][0] == 0.0  # relu'(0) = 0
        np.testing.assert_allclose(dp["fc2.bias"], [(2.0 - 5.0) * dz], rtol=1e-13, atol=0)
        np.testing.assert_allclose(dx.ravel(), [2.0 * g, 5.0 * g], rtol=1e-15)
        assert dp["fc2.weight"][0, 0] == 0.0  # h = relu(0) = 0


@pytest.mark.parametrize("spec", FD_SPECS, ids=spec_id)
def test_vjp_matches_finite_differences(spec):
    p, x, dy = sample(spec, seed=len(spec_id(spec)))
    got = reference.vjp(spec, p, x, dy)
    fd_dx, fd_dp = f_diff(spec, p, x, dy)
    atol = fd_atol(spec, p, x, dy)
    if isinstance(spec, reference.CBAM) and spec.spatial_norm:
        # Inference-mode BN: the running statistics get zero gradient by convention (they are state,
        # not trainable). The output does depend on them; their true partials follow from
        # u = (zs - mean) / sqrt(var + eps) * gamma + beta and are checked here, then set aside.
        inv_std = 1.0 / np.sqrt(p["bn.running_var"] + spec.bn_eps)
        gamma, (dgamma, dbeta) = p["bn.weight"], (got[1]["bn.weight"], got[1]["bn.bias"])
        np.testing.assert_allclose(fd_dp.pop("bn.running_mean"), -gamma * inv_std * dbeta, FD_RTOL, atol)
        np.testing.assert_allclose(fd_dp.pop("bn.running_var"), -0.5 * gamma * inv_std ** 2 * dgamma,
                                   FD_RTOL, atol)
        for name in ("bn.running_mean", "bn.running_var"):
            np.testing.assert_array_equal(got[1].pop(name), 0.0)
    assert_grads_close(got, (fd_dx, fd_dp), rtol=FD_RTOL, atol=atol)


def test_vjp_matches_finite_differences_channels_first():
    spec = FD_SPECS[13]
    p, x, dy = sample(spec, seed=7)
    x, dy = (np.ascontiguousarray(a.transpose(0, 3, 1, 2)) for a in (x, dy))
    got = reference.vjp(spec, p, x, dy, "channels_first")
    assert_grads_close(got, f_diff(spec, p, x, dy, "channels_first"), rtol=FD_RTOL,
                       atol=fd_atol(spec, p, x, dy, "channels_first"))


def test_finite_difference_samples_are_well_posed_and_exercise_flat_pieces():
    # The sampler's guarantees, checked once: hard gates see both a flat and the sloped piece.
    spec = FD_SPECS[1]
    p, x, _ = sample(spec, seed=len(spec_id(spec)))
    z = kinked_values(spec, p, x)[0][1][0]
    assert np.any(np.abs(z) > 3) and np.any(np.abs(z) < 3)


@pytest.mark.parametrize("spec", FD_SPECS, ids=spec_id)
def test_vjp_output_names_shapes_dtypes(spec):
    p, x, dy = sample(spec, seed=1)
    dx, dp = reference.vjp(spec, {k: v.astype(np.float32) for k, v in p.items()}, x.astype(np.float32),
                           dy.astype(np.float16))
    assert dx.dtype == np.float64 and dx.shape == x.shape
    assert {k: v.shape for k, v in dp.items()} == spec.param_shapes()
    assert list(dp) == list(spec.param_shapes())
    assert all(v.dtype == np.float64 for v in dp.values())


def test_batchnorm_running_statistics_get_zero_gradient():
    spec = FD_SPECS[12]
    p, x, dy = sample(spec)
    _, dp = reference.vjp(spec, p, x, dy)
    assert np.all(dp["bn.running_mean"] == 0) and np.all(dp["bn.running_var"] == 0)
    assert np.all(dp["bn.weight"] != 0) and np.all(dp["bn.bias"] != 0)


@settings(max_examples=30, deadline=None)
@given(i=st.integers(0, len(FD_SPECS) - 1), seed=st.integers(0, 2 ** 16), n=st.integers(1, 3),
       h=st.integers(1, 5), w=st.integers(1, 5))
def test_data_formats_are_transposes_and_vjp_is_linear_in_dy(i, seed, n, h, w):
    spec = FD_SPECS[i]
    rng = np.random.default_rng(seed)
    p = spec.init_params(seed=seed, dtype=np.float64)
    x, dy, dy2 = (rng.standard_normal((n, h, w, spec.channels)) for _ in range(3))
    dx, dp = reference.vjp(spec, p, x, dy)

    def nchw(a):
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2))

    dx_cf, dp_cf = reference.vjp(spec, p, nchw(x), nchw(dy), "channels_first")
    assert_grads_close((dx_cf.transpose(0, 2, 3, 1), dp_cf), (dx, dp), rtol=1e-12, atol=1e-14)
    # Scaling by 2 is exact in binary floating point and the VJP is linear in dy: bitwise equal.
    dx2, dp2 = reference.vjp(spec, p, x, 2.0 * dy)
    np.testing.assert_array_equal(dx2, 2.0 * dx)
    for name in dp:
        np.testing.assert_array_equal(dp2[name], 2.0 * dp[name])
    # Additivity holds up to rounding.
    dxa, dpa = reference.vjp(spec, p, x, dy + dy2)
    dxb, dpb = reference.vjp(spec, p, x, dy2)
    assert_grads_close((dxa, dpa), (dx + dxb, {k: dp[k] + dpb[k] for k in dp}), rtol=1e-12, atol=1e-12)


# --- max-pooling ties -------------------------------------------------------------------------------

def test_max_vjp_splits_evenly_among_ties():
    v = np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 0.0], [0.0, 1.0, 2.0, 4.0]])
    np.testing.assert_array_equal(max_vjp(v, np.array([6.0, 3.0, 7.0]), axis=-1),
                                  [[0, 3, 3, 0], [1, 1, 1, 0], [0, 0, 0, 7]])


def test_cbam_tie_in_the_global_max_over_hw():
    # N = H = C = 1, W = 2, x = [2, 2]: the max over (H, W) is tied. The MLP is the identity through
    # relu, so zc = relu(mean x) + relu(max x) = 4 and Mc = sig(4); the spatial conv weight is 0, so
    # Ms = sig(0) = 1/2. With dy = [1, 0], f = x_0 sig(zc) / 2 and d zc / d x_i = 1/2 (mean) + 1/2 (the
    # tied max split evenly). Hence df/dx_0 = sig(4)/2 + x_0 sig'(4)/2 = sig(4)/2 + sig'(4),
    # df/dx_1 = x_0 sig'(4)/2 = sig'(4).
    spec = reference.CBAM(1, reduced_channels=1, spatial_kernel=1, spatial_norm=False)
    p = {"fc1.weight": np.ones((1, 1)), "fc1.bias": np.zeros(1), "fc2.weight": np.ones((1, 1)),
         "fc2.bias": np.zeros(1), "conv.weight": np.zeros((1, 2, 1, 1))}
    x = np.full((1, 1, 2, 1), 2.0)
    dy = np.array([1.0, 0.0]).reshape(1, 1, 2, 1)
    d_sig4 = sig(4) * (1 - sig(4))
    dx, _ = reference.vjp(spec, p, x, dy)
    np.testing.assert_allclose(dx.ravel(), [sig(4) / 2 + d_sig4, d_sig4], rtol=1e-14, atol=0)


def test_cbam_tie_in_the_max_over_channels():
    # N = H = W = 1, C = 2, x = [3, 3]. Zero MLP weights: zc = 0, Mc = 1/2 for both channels, x1 = [1.5, 1.5]
    # (tied), and no gradient reaches x through Mc. The conv (order max, mean) reads only the max:
    # zs = max(x1) = 1.5, Ms = sig(1.5). With dy = [1, 0], f = x1_0 sig(max x1), so
    # df/dx1_0 = sig(1.5) + 1.5 sig'(1.5) / 2 and df/dx1_1 = 1.5 sig'(1.5) / 2; dx = dx1 / 2.
    spec = reference.CBAM(2, reduced_channels=1, spatial_kernel=1, spatial_norm=False)
    p = {"fc1.weight": np.zeros((1, 2)), "fc1.bias": np.zeros(1), "fc2.weight": np.zeros((2, 1)),
         "fc2.bias": np.zeros(2), "conv.weight": np.array([1.0, 0.0]).reshape(1, 2, 1, 1)}
    x = np.full((1, 1, 1, 2), 3.0)
    dy = np.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    d_sig = sig(1.5) * (1 - sig(1.5))
    dx, _ = reference.vjp(spec, p, x, dy)
    np.testing.assert_allclose(dx.ravel(), [(sig(1.5) + 0.75 * d_sig) / 2, 0.75 * d_sig / 2], rtol=1e-14, atol=0)


# --- bad input --------------------------------------------------------------------------------------

def test_dy_of_the_wrong_shape_names_both_shapes():
    spec = reference.SE(4)
    p = spec.init_params(dtype=np.float64)
    with pytest.raises(ValueError, match=r"\(2, 3, 3, 4\).*\(2, 3, 4, 4\)|\(2, 3, 4, 4\).*\(2, 3, 3, 4\)"):
        reference.vjp(spec, p, np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 3, 4)))


def test_missing_param_and_bad_inputs():
    spec = reference.CBAM(8, spatial_kernel=3)
    p = spec.init_params(dtype=np.float64)
    x = np.zeros((1, 3, 3, 8))
    missing = {k: v for k, v in p.items() if k != "bn.running_var"}
    with pytest.raises(reference.ParamError) as err:
        reference.vjp(spec, missing, x, x)
    assert err.value.missing == ["bn.running_var"]
    with pytest.raises(ValueError, match="8 channels"):
        reference.vjp(spec, p, np.zeros((1, 3, 3, 5)), np.zeros((1, 3, 3, 5)))
    with pytest.raises(TypeError, match="floating-point"):
        reference.vjp(spec, p, x, np.zeros(x.shape, dtype=np.int64))
    with pytest.raises(TypeError, match="floating-point"):
        reference.vjp(spec, p, x.astype(np.int64), x)
    with pytest.raises(ValueError, match="data_format"):
        reference.vjp(spec, p, x, x, "nhwc")
    with pytest.raises(TypeError, match="unknown spec"):
        reference.vjp(object(), p, x, x)
