"""The reference spec and oracle, checked against independent computations."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from reference import activations


def independent_eca_k(c: int, gamma: int = 2, b: int = 1) -> int:
    """Largest t with 2**(gamma*t - b) <= c, found by counting up; then made odd."""
    t = 0
    while gamma * (t + 1) - b < 0 or 2 ** (gamma * (t + 1) - b) <= c:
        t += 1
    return t if t % 2 else t + 1


def test_eca_kernel_size_every_c_up_to_100000():
    got = [reference.eca_kernel_size(c) for c in range(1, 100_001)]
    # independent: thresholds where t steps up are the odd powers of two, 2**(2t-1)
    expected = [independent_eca_k(c) for c in range(1, 100_001)]
    assert got == expected


@pytest.mark.parametrize("gamma,b", [(1, 0), (1, 1), (2, 0), (2, 2), (3, 1), (3, 4)])
def test_eca_kernel_size_other_gamma_b(gamma, b):
    cs = list(range(1, 5000)) + [2 ** e + d for e in range(13, 30) for d in (-1, 0, 1)]
    assert [reference.eca_kernel_size(c, gamma, b) for c in cs] == [independent_eca_k(c, gamma, b) for c in cs]


def test_eca_kernel_size_where_float_log_is_inexact():
    # math.log(2**29, 2) is not 29.0; the spec must not depend on that rounding.
    assert math.log(2 ** 29, 2) != 29.0
    for e in range(1, 40):
        assert reference.eca_kernel_size(2 ** e) == independent_eca_k(2 ** e)
        assert reference.eca_kernel_size(2 ** e - 1) == independent_eca_k(2 ** e - 1)


@pytest.mark.parametrize("channels,k", [(1, 1), (7, 1), (8, 3), (127, 3), (128, 5), (2047, 5), (2048, 7),
                                        (32767, 7), (512, 5)])
def test_eca_kernel_table_by_hand(channels, k):
    # worked out by hand from the paper's rule; 512 -> 5 is the article's own example.
    assert reference.ECA(channels).kernel_size == k


def test_article_parameter_counts():
    se = reference.SE(24)
    assert se.reduced_channels == 6
    assert se.num_params() == 24 * 6 + 6 + 6 * 24 + 24 == 318
    eca = reference.ECA(512)
    assert eca.kernel_size == 5 and eca.num_params() == 5


@pytest.mark.parametrize("channels,ratio,width", [(24, 4, 6), (3, 4, 1), (1, 16, 1), (200, 16, 12), (64, 1, 64)])
def test_se_reduced_width(channels, ratio, width):
    assert reference.SE(channels, ratio).reduced_channels == width


def test_swish_is_silu():
    assert reference.SE(8, activation="swish") == reference.SE(8, activation="silu")


@pytest.mark.parametrize("kwargs,field,exc", [
    (dict(channels=0), "channels", ValueError),
    (dict(channels=-3), "channels", ValueError),
    (dict(channels=2.0), "channels", TypeError),
    (dict(channels=True), "channels", TypeError),
    (dict(channels=8, ratio=0), "ratio", ValueError),
    (dict(channels=8, reduced_channels=0), "reduced_channels", ValueError),
    (dict(channels=8, activation="tanh"), "activation", ValueError),
    (dict(channels=8, gate="swish"), "gate", ValueError),
    (dict(channels=8, bias="yes"), "bias", TypeError),
])
def test_se_spec_rejects(kwargs, field, exc):
    with pytest.raises(exc, match=field):
        reference.SE(**kwargs)


@pytest.mark.parametrize("k", [0, -3, 2, 4, 2.5, "3", True])
def test_eca_rejects_bad_kernel_size(k):
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        reference.ECA(16, kernel_size=k)


@pytest.mark.parametrize("kwargs,field", [(dict(gamma=0), "gamma"), (dict(b=-1), "b"), (dict(gamma=1.5), "gamma")])
def test_eca_rejects_bad_gamma_b(kwargs, field):
    with pytest.raises((ValueError, TypeError), match=field):
        reference.ECA(16, **kwargs)


def test_specs_are_frozen_and_hashable():
    spec = reference.SE(24)
    with pytest.raises(AttributeError):
        spec.channels = 3
    assert len({spec, reference.SE(24), reference.ECA(24)}) == 2


def test_init_params_deterministic_and_seeded():
    spec = reference.SE(24)
    a, b, c = spec.init_params(0), spec.init_params(0), spec.init_params(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc1.bias"], c["fc1.bias"])
    assert {k: v.shape for k, v in a.items()} == spec.param_shapes()
    assert spec.init_params(dtype=np.float64)["fc2.weight"].dtype == np.float64
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): fc1's fan-in is C=24
    assert np.abs(a["fc1.weight"]).max() <= 1 / np.sqrt(24)


# --- the oracle against loops written from the paper's equations ---------------------------------

def loop_se(spec, p, x):
    n, h, w, c = x.shape
    act = {"relu": lambda v: max(v, 0.0), "silu": lambda v: v / (1 + math.exp(-v))}[spec.activation]
    gate = {"sigmoid": lambda v: 1 / (1 + math.exp(-v)),
            "hard_sigmoid": lambda v: min(max(v + 3, 0.0), 6.0) / 6}[spec.gate]
    y = np.empty_like(x, dtype=np.float64)
    for i in range(n):
        s = [sum(float(x[i, a, b_, ch]) for a in range(h) for b_ in range(w)) / (h * w) for ch in range(c)]
        hid = [act(sum(p["fc1.weight"][r, ch] * s[ch] for ch in range(c)) + (p["fc1.bias"][r] if spec.bias else 0))
               for r in range(spec.reduced_channels)]
        for ch in range(c):
            z = sum(p["fc2.weight"][ch, r] * hid[r] for r in range(spec.reduced_channels))
            y[i, :, :, ch] = x[i, :, :, ch] * gate(z + (p["fc2.bias"][ch] if spec.bias else 0))
    return y


def loop_eca(spec, p, x):
    n, h, w, c = x.shape
    k, pad = spec.kernel_size, (spec.kernel_size - 1) // 2
    y = np.empty_like(x, dtype=np.float64)
    for i in range(n):
        s = [float(x[i, :, :, ch].mean()) for ch in range(c)]
        for ch in range(c):
            z = sum(p["conv.weight"][0, 0, j] * s[ch + j - pad] for j in range(k) if 0 <= ch + j - pad < c)
            y[i, :, :, ch] = x[i, :, :, ch] / (1 + math.exp(-z))
    return y


@pytest.mark.parametrize("spec", [reference.SE(5, ratio=2), reference.SE(6, activation="silu", gate="hard_sigmoid"),
                                  reference.SE(4, ratio=1, bias=False), reference.ECA(6, kernel_size=3),
                                  reference.ECA(5, kernel_size=7), reference.ECA(9, kernel_size=1)])
def test_oracle_matches_loops(spec):
    params = spec.init_params(seed=3, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 2, spec.channels)) * 3
    expected = (loop_se if spec.kind == "se" else loop_eca)(spec, params, x)
    np.testing.assert_allclose(reference.forward(spec, params, x), expected, rtol=1e-13, atol=1e-13)


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 40), n=st.integers(1, 3), h=st.integers(1, 4), w=st.integers(1, 4),
       kind=st.sampled_from(["se", "eca"]))
def test_oracle_data_formats_agree(c, n, h, w, kind):
    spec = reference.SE(c) if kind == "se" else reference.ECA(c)
    params = spec.init_params(seed=c)
    x = np.random.default_rng(c).standard_normal((n, h, w, c)).astype(np.float32)
    last = reference.forward(spec, params, x)
    first = reference.forward(spec, params, x.transpose(0, 3, 1, 2), "channels_first")
    assert last.dtype == np.float64
    np.testing.assert_array_equal(first.transpose(0, 2, 3, 1), last)
    # a sigmoid gate lies in (0, 1), so attention never grows a value
    assert np.all(np.abs(last) <= np.abs(x) + 1e-12)


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 10 ** 6))
def test_eca_kernel_is_odd_and_monotone(c):
    k = reference.eca_kernel_size(c)
    assert k % 2 == 1 and k >= 1
    assert reference.eca_kernel_size(c + 1) >= k


# --- activation formulas ------------------------------------------------------------------------

def test_activation_formulas_at_known_points():
    x = np.array([-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0])
    np.testing.assert_allclose(activations.hard_sigmoid(x), [0, 0, 0.25, 0.5, 0.75, 1, 1])
    np.testing.assert_allclose(activations.relu(x), [0, 0, 0, 0, 1.5, 3, 4])
    np.testing.assert_allclose(activations.sigmoid(np.array([0.0, np.log(3.0)])), [0.5, 0.75])
    np.testing.assert_allclose(activations.silu(np.array([np.log(3.0)])), [0.75 * np.log(3.0)])
    big = activations.sigmoid(np.array([-800.0, 800.0]))  # no overflow warnings, exact limits
    assert big[0] == 0.0 and big[1] == 1.0


# --- validation errors name what is wrong ---------------------------------------------------------

SPEC = reference.SE(8)
PARAMS = SPEC.init_params()


@pytest.mark.parametrize("x,fmt,exc,pattern", [
    (np.zeros((2, 8)), "channels_last", ValueError, r"rank-4.*rank 2"),
    (np.zeros((1, 3, 3, 7)), "channels_last", ValueError, r"8 channels.*has 7"),
    (np.zeros((1, 8, 3, 3)), "channels_last", ValueError, r"8 channels.*has 3"),
    (np.zeros((1, 3, 3, 8)), "channels_first", ValueError, r"8 channels.*has 3"),
    (np.zeros((1, 0, 3, 8)), "channels_last", ValueError, r"non-empty spatial.*\(0, 3\)"),
    (np.zeros((1, 8, 3, 0)), "channels_first", ValueError, r"non-empty spatial.*\(3, 0\)"),
    (np.zeros((1, 3, 3, 8), dtype=np.int32), "channels_last", TypeError, "int32"),
    (np.zeros((1, 3, 3, 8), dtype=bool), "channels_last", TypeError, "bool"),
    (np.zeros((1, 3, 3, 8)), "NHWC", ValueError, "data_format='NHWC'"),
])
def test_forward_rejects_bad_input(x, fmt, exc, pattern):
    with pytest.raises(exc, match=pattern):
        reference.forward(SPEC, PARAMS, x, fmt)


def test_forward_reports_each_param_problem_separately():
    bad = dict(PARAMS)
    del bad["fc2.bias"]
    bad["fc3.weight"] = np.zeros(3, np.float32)
    bad["fc1.weight"] = np.zeros((8, 2), np.float32)  # transposed: the classic port bug
    bad["fc1.bias"] = np.zeros(2, np.int64)
    with pytest.raises(reference.ParamError) as info:
        reference.forward(SPEC, bad, np.zeros((1, 2, 2, 8)))
    err = info.value
    assert err.missing == ["fc2.bias"] and err.unexpected == ["fc3.weight"]
    assert err.mismatched == {"fc1.weight": ((2, 8), (8, 2))}
    assert list(err.bad_dtype) == ["fc1.bias"]
    text = str(err)
    for piece in ("missing keys: fc2.bias", "unexpected keys: fc3.weight",
                  "shape mismatch for fc1.weight: expected (2, 8), got (8, 2)", "bad dtype for fc1.bias", "int64"):
        assert piece in text


def test_forward_rejects_unknown_spec():
    with pytest.raises(TypeError, match="unknown spec"):
        reference.forward(object(), {}, np.zeros((1, 1, 1, 1)))


def test_forward_returns_float64_for_float32_input():
    y = reference.forward(SPEC, PARAMS, np.ones((1, 2, 2, 8), np.float32))
    assert y.dtype == np.float64


@pytest.mark.parametrize("actual, expected", [([np.nan, 1.0], [1.0, 1.0]), ([1.0, 1.0], [np.nan, 1.0]),
                                              ([np.inf, 1.0], [1.0, 1.0]), ([np.nan, 1.0], [np.nan, 1.0])])
def test_assert_within_refuses_what_within_refuses_nan_and_inf_included(actual, expected):
    """A NaN or Inf anywhere is outside every tolerance: NaN logits from a wrong port never pass."""
    tol = reference.Tolerance(rtol=1e-3, atol=1e-3)
    assert not reference.within(actual, expected, tol)
    with pytest.raises(AssertionError, match="not finite|outside"):
        reference.assert_within(actual, expected, tol, what="logits")
