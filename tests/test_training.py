"""End to end: the same tiny network trained for a few SGD steps in every backend.

Net (`tiny_nets`): 3x3 conv stem (3 -> C, bias, zero 'same' padding) -> the attnport block for the
spec, in training mode (CBAM's BatchNorm normalizes with batch statistics and updates its running
statistics) -> global average pool -> dense (C -> 5, bias). Mean softmax cross-entropy over 4 fixed
random 8x8 inputs with fixed labels; plain SGD (lr 0.1, no momentum), 3 steps, each framework with
its own autodiff. Every backend starts from the same canonical weights (the block's through the
bridge's ``load_params``, stem/head through `reference.layout`); the losses and the canonical weights
after every step (block via ``export_params``, BN running statistics included) must agree with torch.

Tolerance (derived, float32 and float64 alike; ``T = reference.pair_tolerance(dtype)``):

* step 0: the loaded net exported again equals the canonical init bit for bit (exact transfer).
* weights after t steps: W_t = W_0 - lr * sum_s g_s. Two backends differ by e_t with
  e_{s+1} = (I - lr*H_s) e_s + lr * (g'_s - g_s): the new gradient difference at equal weights,
  bounded by the pair gradient contract `reference.gradient_tolerance(dtype, g_s, pair=True)`
  (what tests/test_gradients.py holds every block to), plus the earlier difference carried through
  the curvature H. We allow the carried part to double per step (PROPAGATION = 2, i.e.
  lr*||H|| <= 1); power iteration on the float64 torch nets at W_0 (this data) gives
  lr*||H||_2 = 0.024-0.055 for these six specs, so the allowance is > 15x what the curvature needs. So
  |e_t| <= E_t = lr * sum_{s<t} 2**(t-1-s) * (atol_g(s) + rtol_g * max|g_s|), added to T's atol;
  T itself covers the t roundings of the update (t*u*|W| << 128*u*|W|). This is looser than T by
  at most about 1.4 * T.atol * max(1, max|g|) at t = 3.
* loss at step t: the forward at equal weights (T, as for any output) plus the first-order effect
  of the weight differences, sum_k ||g_t,k||_1 * E_t,k.
* BN running statistics after t steps: r_t = (1-m)**t r_0 + sum_s m(1-m)**(t-1-s) b_s with b_s the
  batch mean / unbiased variance of the BN input, a reduction over N*H*W values like a parameter
  gradient: each b_s within `gradient_tolerance(dtype, b_s, pair=True)` at equal weights, plus
  ||d b_s / dW||_1 * E_s for the weight differences; T covers r_t's own roundings.
All scales (g_s, d b_s / dW, b_s) come from torch's run, by autograd. Observed differences are at
most 2 ulp of the compared value (<= 0.4 % of these bounds); every weight and statistic moves by more
than its bound (asserted), so a backend that drops or mis-routes any update fails. The float64 run
is the one that resolves BatchNorm's Bessel correction: updating running_var with the biased batch
variance changes it by m * var_b / (N*H*W - 1), about 1e-6 relative here, below float32's T but
10^8 times float64's.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

import reference
from attnport import cases

import tiny_nets
from helpers import BACKEND_NAMES, get_bridge

LR, STEPS = 0.1, 3
BATCH, HW = 4, (8, 8)
LABELS = np.array([0, 3, 1, 4])
# The data decides how far each weight moves in 3 steps; the attention block's gradients are small
# (1e-4..1e-2) next to the stem's and head's. With this seed every tensor of every config moves by at
# least 3x its agreement bound (the second test asserts it), so the comparison can see each update.
DATA_SEED = 4
PROPAGATION = 2.0  # allowed growth factor per step of an earlier weight difference (see the docstring)
EXPECTED = "torch"  # the run whose autodiff gradients scale the tolerances; every backend is compared to it

CONFIGS = [pytest.param(spec, "float32", id=f"{cases.spec_id(spec)}-float32") for spec in cases.REPRESENTATIVE]
# float64 once, on the spec with the most machinery (MLP, spatial conv, BatchNorm in training mode).
CONFIGS.append(pytest.param(reference.CBAM.official(40), "float64", id="cbam-official-C40-float64"))


def make_data(dtype):
    x = np.random.default_rng(DATA_SEED).standard_normal((BATCH, *HW, tiny_nets.IN_CHANNELS))
    return x.astype(reference.numpy_dtype(dtype)), LABELS


@functools.lru_cache(maxsize=None)
def trained(backend: str, spec, dtype: str) -> tiny_nets.Run:
    get_bridge(backend)  # skips when the framework is missing; imports it once, strict numerics
    x, labels = make_data(dtype)
    return tiny_nets.TRAINERS[backend](spec, tiny_nets.init_params(spec, seed=0, dtype=dtype), x, labels, LR, STEPS,
                                       dtype)


# ----------------------------------------------------------------------------------- tolerances
def _max_abs(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.abs(a).max()) if a.size else 0.0


def _pair_bound(dtype, value) -> float:
    """Largest allowed |difference| of a reduction ``value`` computed by two backends at equal
    weights: `reference.gradient_tolerance(pair=True)`'s atol + rtol * max|value|."""
    tol = reference.gradient_tolerance(dtype, value, pair=True)
    return tol.atol + tol.rtol * _max_abs(value)


def weight_slack(dtype, expected: tiny_nets.Run, t: int) -> dict[str, float]:
    """E_t: bound on |W_t(backend) - W_t(expected)| from the gradients, per trainable tensor."""
    return {name: LR * sum(PROPAGATION ** (t - 1 - s) * _pair_bound(dtype, expected.grads[s][name])
                           for s in range(t))
            for name in expected.grads[0]}


def _first_order(grads: dict, slack: dict) -> float:
    """max |grad . e| over weight differences with |e_k| <= slack[k]: sum_k ||grad_k||_1 * slack[k]."""
    return sum(float(np.abs(np.asarray(g, np.float64)).sum()) * slack[name] for name, g in grads.items())


def _widened(dtype, extra: float) -> reference.Tolerance:
    base = reference.pair_tolerance(dtype)
    return reference.Tolerance(rtol=base.rtol, atol=base.atol + extra)


def loss_tolerance(spec, dtype, expected: tiny_nets.Run, t: int) -> reference.Tolerance:
    return _widened(dtype, _first_order(expected.grads[t], weight_slack(dtype, expected, t)))


def param_tolerance(spec, dtype, expected: tiny_nets.Run, name: str, t: int) -> reference.Tolerance:
    if tiny_nets.is_trainable(spec, name):
        return _widened(dtype, weight_slack(dtype, expected, t)[name])
    # A BatchNorm running statistic: a momentum-weighted sum of the per-step batch statistics.
    m = reference.bn_momentum(spec.bn_momentum, "torch")
    leaf = name.rsplit(".", 1)[1]
    extra = 0.0
    for s in range(t):
        value, grads = expected.bn_stats[s][leaf]
        extra += m * (1 - m) ** (t - 1 - s) * (_pair_bound(dtype, value)
                                               + _first_order(grads, weight_slack(dtype, expected, s)))
    return _widened(dtype, extra)


# ---------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("spec,dtype", CONFIGS)
@pytest.mark.parametrize("backend", [b for b in BACKEND_NAMES if b != EXPECTED])
def test_training_agrees_with_torch(backend, spec, dtype):
    expected = trained(EXPECTED, spec, dtype)
    run = trained(backend, spec, dtype)
    assert len(run.losses) == STEPS and len(run.params) == STEPS + 1
    for t in range(STEPS):
        reference.assert_within(run.losses[t], expected.losses[t], loss_tolerance(spec, dtype, expected, t),
                                what=f"{backend} vs {EXPECTED}: loss at step {t}")
    for t in range(STEPS + 1):
        assert set(run.params[t]) == set(expected.params[t]), f"{backend}: canonical names differ at step {t}"
        for name, want in expected.params[t].items():
            got = run.params[t][name]
            assert got.dtype == np.dtype(dtype), f"{backend} {name}: dtype {got.dtype}"
            reference.assert_within(got, want, param_tolerance(spec, dtype, expected, name, t),
                                    what=f"{backend} vs {EXPECTED}: {name} after {t} SGD steps")


@pytest.mark.parametrize("spec,dtype", CONFIGS)
@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_training_starts_from_the_canonical_weights_and_moves_them(backend, spec, dtype):
    """The comparison above can fail: every backend starts bit-exactly at the canonical init, every
    weight and BN statistic then moves by more than the bound the comparison allows, and the loss
    falls at every step (full-batch gradient descent with lr*||H|| << 2 must decrease it)."""
    expected = trained(EXPECTED, spec, dtype)
    run = trained(backend, spec, dtype)
    init = tiny_nets.init_params(spec, seed=0, dtype=dtype)
    assert set(run.params[0]) == set(init)
    for name, value in init.items():
        np.testing.assert_array_equal(run.params[0][name], value, err_msg=f"{backend}: {name} after loading")
    trainable = {name for name in init if tiny_nets.is_trainable(spec, name)}
    assert set(expected.grads[0]) == trainable, "torch's parameters are not the canonical trainable names"
    for name in init:
        tol = param_tolerance(spec, dtype, expected, name, STEPS)
        assert not reference.within(run.params[STEPS][name], init[name], tol), (
            f"{backend}: {name} moved less than the agreement bound (atol {tol.atol:.3g}) in {STEPS} steps")
    for t in range(1, STEPS):
        tol = loss_tolerance(spec, dtype, expected, t)
        assert run.losses[t] < run.losses[t - 1], f"{backend}: loss rose at step {t}: {run.losses}"
        assert not reference.within(run.losses[t], run.losses[t - 1], tol), (
            f"{backend}: loss changed by less than its agreement bound at step {t}: {run.losses}")
