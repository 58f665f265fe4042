"""Flax CBAM's blocked path (traced inference of a batch larger than one cache block) against the reference.

`reference.blocking.CACHE_BLOCK_BYTES` is shrunk so that a small batch needs several blocks; the jaxpr
must then hold a ``scan`` (the blocks) and the result must still match the oracle, forward and backward.
"""
import numpy as np
import pytest

import reference
from helpers import get_bridge, make_input, spec_params

jax = pytest.importorskip("jax")
bridge = get_bridge("jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

SPECS = [reference.CBAM(32), reference.CBAM.timm(48)]
N, HW = 5, (6, 7)


@pytest.fixture
def two_samples_per_block(monkeypatch):
    monkeypatch.setattr(reference.blocking, "CACHE_BLOCK_BYTES", 2 * max(s.channels for s in SPECS) * 6 * 7 * 4)


def _traced(module, x):
    graphdef, state = nnx.split(module)
    return jax.make_jaxpr(lambda s, t: nnx.merge(graphdef, s)(t))(state, x).pretty_print()


@pytest.mark.parametrize("spec", spec_params(SPECS))
def test_blocked_forward_and_gradient_match_reference(spec, two_samples_per_block):
    params = spec.init_params(seed=0)
    module = bridge.load_params(bridge.build(spec), params)
    x = make_input(spec, N, HW, "float32")
    assert "scan" in _traced(module, jnp.asarray(x))  # the blocks
    expected = reference.forward(spec, params, x.astype(np.float64))
    reference.assert_within(bridge.apply(module, x), expected, reference.tolerance("float32"))
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    dx, dparams = bridge.vjp(module, x, dy)
    want_dx, want_dparams = reference.vjp(spec, params, x.astype(np.float64), dy.astype(np.float64))
    reference.assert_within(dx, want_dx, reference.gradient_tolerance("float32", want_dx), what="dx")
    for key, want in want_dparams.items():
        reference.assert_within(dparams[key], want, reference.gradient_tolerance("float32", want), what=key)


def test_eager_small_batches_and_training_take_the_plain_path(two_samples_per_block):
    spec = SPECS[0]
    module = bridge.build(spec)
    x = jnp.asarray(make_input(spec, N, HW, "float32"))
    assert "scan" in _traced(module, x)
    assert "scan" not in _traced(module, x[:2])  # one block holds the whole batch
    module.train()  # BatchNorm on batch statistics needs the whole batch at once
    assert "scan" not in _traced(module, x)
    module.eval()
    eager = module(x)  # not traced: op by op, the plain formulation
    params = bridge.export_params(module)
    reference.assert_within(np.asarray(eager), reference.forward(spec, params, np.asarray(x, np.float64)),
                            reference.tolerance("float32"))
