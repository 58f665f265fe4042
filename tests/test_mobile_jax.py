"""MobileNetV3 and EfficientNet-B0 in the jax backend (jax_impl/mobile.py) against the float64 oracle.

Each of the six `reference.nets.MOBILE` models is built once per dtype with ``init="zeros"`` (no
Flax initializer runs: each compiles once per kernel shape), loaded with ``spec.init_params(seed=0)`` and
compared with `reference.nets.forward` on the same values in float64 at `reference.network_tolerance`, on
an odd (1x33x33) and an even (2x32x32) input: 'same' and symmetric padding differ only where a stride-2
conv reads an even size. Every (model, dtype, input shape) is one XLA compile, the file's cost. The three
Keras applications names (their preprocessing inside the model) run on raw pixels in [0, 255] at 2x32x32.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

import reference
from reference import nets
from reference.nets import layers as L
from reference.spec_base import STATISTICS_KINDS

import net_cases
from helpers import get_bridge

pytestmark = pytest.mark.xdist_group(name="mobile-jax")
MODELS = nets.TIMM_MOBILE
SIZES = ((1, 33), (2, 32))
# one per padding style, both heads; (N, H = W) the size whose padding differs least from the other style
FLOAT64_CASES = (("mobilenetv3_small_100", 1, 33), ("tf_efficientnet_b0", 2, 32))
FLOAT64_MAX_FRACTION = 0.05
STATS = STATISTICS_KINDS  # BatchNorm's and the input normalization's: nnx.BatchStat
KERAS = nets.KERAS_MOBILE  # preprocessing in the model: raw pixels
PIXEL_CASE = (2, 32)


def bridge():
    return get_bridge("jax")


@functools.lru_cache(maxsize=None)
def params(name: str, dtype: str) -> dict:
    return nets.get(name).init_params(seed=0, dtype=reference.numpy_dtype(dtype))


@functools.lru_cache(maxsize=None)
def loaded(name: str, dtype: str, padding: str | None = None):
    """``name`` in ``dtype`` holding `params` (cached: do not modify); ``padding`` overrides the spec's."""
    b, spec = bridge(), nets.get(name)
    if padding is not None:
        spec = dataclasses.replace(spec, padding=padding)
    return b.load_params(b.build(spec, dtype=dtype, init="zeros"), params(name, dtype))


def net_input(n: int, hw: int, dtype: str) -> np.ndarray:
    x = np.random.default_rng(1000 * n + hw).standard_normal((n, hw, hw, 3))
    return x.astype(reference.numpy_dtype(dtype))


@functools.lru_cache(maxsize=None)
def oracle(name: str, dtype: str, n: int, hw: int) -> np.ndarray:
    """float64 logits of ``dtype``'s parameter values on `net_input` (both cast to float64)."""
    p = {k: v.astype(np.float64) for k, v in params(name, dtype).items()}
    return nets.forward(nets.get(name), p, net_input(n, hw, dtype).astype(np.float64))


pixels = net_cases.pixels  # raw pixels in [0, 255]


pixel_oracle = net_cases.pixel_oracle  # float32 parameters and pixels by default


@functools.lru_cache(maxsize=None)
def logits(name: str, dtype: str, n: int, hw: int) -> np.ndarray:
    return bridge().apply(loaded(name, dtype), net_input(n, hw, dtype))


def outside(y, ref, tol) -> bool:
    try:
        reference.assert_within(y, ref, tol)
    except AssertionError:
        return True
    return False


# --- logits against the oracle -------------------------------------------------------------------------------
@pytest.mark.parametrize("n, hw", SIZES, ids=[f"{n}x{hw}" for n, hw in SIZES])
@pytest.mark.parametrize("name", MODELS)
def test_float32_logits_match_the_oracle(name, n, hw):
    y, ref = logits(name, "float32", n, hw), oracle(name, "float32", n, hw)
    assert y.shape == (n, 1000) and y.dtype == np.float32
    assert ref.std() > 0.1  # the randomized BatchNorms keep a signal through every block
    reference.assert_within(y, ref, reference.network_tolerance(nets.get(name), "float32", ref))


@pytest.mark.parametrize("name", KERAS)
def test_keras_applications_on_raw_pixels_match_the_oracle(name):
    (n, hw), spec = PIXEL_CASE, nets.get(name)
    y, ref = bridge().apply(loaded(name, "float32"), pixels(n, hw)), pixel_oracle(name, n, hw)
    assert spec.preprocessing != "none" and y.shape == (n, 1000) and y.dtype == np.float32
    assert ref.std() > 0.1
    reference.assert_within(y, ref, reference.network_tolerance(spec, "float32", ref), what=f"{name} {n}x{hw}")


@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0"])
def test_the_preprocessing_is_where_the_layout_says_and_is_not_ignored(name):
    """``normalization.mean`` / ``.variance`` are `nnx.BatchStat` at those state paths; a wrong variance
    (EfficientNet) or no preprocessing at all (MobileNetV3's rescale) leaves the oracle's tolerance."""
    from flax import nnx

    from jax_impl.mobile import InputNormalization

    (n, hw), spec = PIXEL_CASE, nets.get(name)
    model, x, ref = loaded(name, "float32"), pixels(n, hw), pixel_oracle(name, n, hw)
    tol = reference.network_tolerance(spec, "float32", ref)
    stats = {".".join(map(str, k)): v for k, v in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}
    if spec.preprocessing == "keras_mobilenetv3":
        assert not hasattr(model, "normalization") and not any(k.startswith("normalization") for k in stats)
        bare = nets.forward(dataclasses.replace(spec, preprocessing="none"), params(name, "float32"), x)
        assert outside(bare, ref, tol)  # the rescale matters on these pixels
        return
    assert type(model.normalization) is InputNormalization
    p, b = params(name, "float32"), bridge()
    for leaf in ("mean", "variance"):
        var = stats[f"normalization.{leaf}"]
        assert var[...].shape == (3,) and var[...].dtype == np.float32
        assert np.array_equal(np.asarray(var[...]), p[f"normalization.{leaf}"])
    b.ADAPTER.set(model, "normalization.variance", p["normalization.variance"] * 4)
    try:
        wrong = b.apply(model, x)
    finally:
        b.ADAPTER.set(model, "normalization.variance", p["normalization.variance"])
    assert outside(wrong, ref, tol)
    reference.assert_within(b.apply(model, x), ref, tol)  # put back


@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0"])
def test_keras_applications_in_float64_match_the_oracle(name):
    """float64 end to end on pixels, the rescale's constants included (none rounded to float32)."""
    (n, hw), spec = PIXEL_CASE, nets.get(name)
    y = bridge().apply(loaded(name, "float64"), pixels(n, hw, "float64"))
    ref = net_cases.pixel_oracle(name, n, hw, "float64")
    tol = reference.network_tolerance(spec, "float64", ref)
    assert y.dtype == np.float64 and ref.std() > 0.1
    reference.assert_within(y, ref, tol, what=f"{name} {n}x{hw} float64")
    assert reference.tolerance_fraction(y, ref, tol) < FLOAT64_MAX_FRACTION


@pytest.mark.parametrize("name, n, hw", FLOAT64_CASES)
def test_float64_logits_match_the_oracle_closely(name, n, hw):
    y, ref = logits(name, "float64", n, hw), oracle(name, "float64", n, hw)
    assert y.dtype == np.float64
    tol = reference.network_tolerance(nets.get(name), "float64", ref)
    assert reference.tolerance_fraction(y, ref, tol) < FLOAT64_MAX_FRACTION


def test_symmetric_padding_on_same_weights_is_caught_on_the_even_input():
    """tf_mobilenetv3_small_100 built with torch's k // 2 padding: on 32 px every stride-2 conv reads an even
    size (32, 16, 8, 4) where 'SAME' pads (0, 1), and the logits leave the tolerance of the 'same' oracle,
    while they are within that of the oracle told the same wrong padding: the difference is the padding.
    (On 33 px the two paddings agree: tests/test_nets_mobile_reference.py.)"""
    name, dtype, n, hw = "tf_mobilenetv3_small_100", "float32", 2, 32
    spec = nets.get(name)
    assert spec.padding == "same"
    y = bridge().apply(loaded(name, dtype, "symmetric"), net_input(n, hw, dtype))
    right = oracle(name, dtype, n, hw)
    assert outside(y, right, reference.network_tolerance(spec, dtype, right))
    p = {k: v.astype(np.float64) for k, v in params(name, dtype).items()}
    symmetric = dataclasses.replace(spec, padding="symmetric")
    wrong = nets.forward(symmetric, p, net_input(n, hw, dtype).astype(np.float64))
    reference.assert_within(y, wrong, reference.network_tolerance(symmetric, dtype, wrong))


@pytest.mark.parametrize("h, w, k, stride", [(8, 7, 3, 2), (9, 6, 5, 2), (6, 5, 5, 1)])
def test_same_conv_pads_as_the_oracle(h, w, k, stride):
    """The 'same' depthwise conv layer on odd and even sizes, stride 1 and 2, against `conv2d_padded`."""
    import jax.numpy as jnp
    from flax import nnx

    from jax_impl.mobile import Conv

    rng = np.random.default_rng(h * 100 + w * 10 + k)
    x, wt = rng.standard_normal((2, h, w, 4)), rng.standard_normal((4, 1, k, k))
    with bridge().x64_scope("float64"):
        conv = Conv(4, 4, k, stride, 4, mode="same", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        conv.kernel[...] = jnp.asarray(wt.transpose(2, 3, 1, 0))
        y = np.asarray(conv(jnp.asarray(x)))
    want = L.conv2d_padded(x, wt, "same", stride, 4)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    assert conv.pads(h, w) == (L.same_pads(h, k, stride), L.same_pads(w, k, stride))
    if stride == 2 and (h % 2 == 0 or w % 2 == 0):  # an even size: symmetric padding is a different result
        assert not np.allclose(y, L.conv2d_padded(x, wt, "symmetric", stride, 4), rtol=1e-6, atol=1e-6)


# --- names, variables, export --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS + KERAS)
def test_variables_are_the_param_table_one_to_one(name):
    from flax import nnx

    spec, model = nets.get(name), loaded(name, "float32")
    table = {reference.native(info, "flax")[0]: info for info in spec.param_table()}
    assert len(table) == len(spec.param_table())

    def flat(state):
        return {".".join(map(str, path)): v for path, v in nnx.to_flat_state(state)}

    everything = flat(nnx.state(model))
    assert set(everything) == set(table)
    for path, var in everything.items():
        assert tuple(var[...].shape) == reference.native_shape(table[path], "flax"), path
    assert set(flat(nnx.state(model, nnx.BatchStat))) == {p for p, i in table.items() if i.kind in STATS}
    assert sum(v[...].size for v in flat(nnx.state(model, nnx.Param)).values()) == spec.num_trainable_params()
    adapter_names = {n: shape for n, shape, _ in bridge().ADAPTER.variables(model)}
    assert adapter_names == {p: reference.native_shape(info, "flax") for p, info in table.items()}


@pytest.mark.parametrize("name", MODELS + ("EfficientNetB0",))
def test_export_after_load_is_bit_exact(name):
    p, exported = params(name, "float32"), bridge().export_params(loaded(name, "float32"))
    assert set(exported) == set(p)
    assert all(exported[k].dtype == v.dtype and exported[k].tobytes() == v.tobytes() for k, v in p.items())


def test_blocks_are_depthwise_with_the_se_block_class():
    import jax_impl

    for name in ("mobilenetv3_small_100", "efficientnet_b0"):
        spec, model = nets.get(name), loaded(name, "float32")
        for b in spec.blocks():
            _, i, j = b.path.split(".")
            block = model.blocks[int(i)][int(j)]
            if b.kind != "cn":
                assert block.conv_dw.feature_group_count == b.mid_channels, b.path
            se = getattr(block, "se", None)
            assert (se is None) if b.attention is None else (type(se) is jax_impl.SEBlock and se.spec == b.attention)
    assert nets.get("mobilenetv3_small_100").blocks()[0].attention.gate == "hard_sigmoid"


# --- the NNX idioms ------------------------------------------------------------------------------------------
def test_nnx_jit_and_split_merge_jit_equal_the_adapter():
    import jax
    from flax import nnx

    name, dtype, n, hw = "tf_mobilenetv3_small_100", "float32", 2, 32  # 'same': pads from the traced shape
    model, x = loaded(name, dtype), net_input(n, hw, dtype)
    y = logits(name, dtype, n, hw)
    by_nnx_jit = np.asarray(nnx.jit(lambda m, v: m(v))(model, x))
    graphdef, state = nnx.split(model)
    by_jax_jit = np.asarray(jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, x))
    tol = reference.pair_tolerance(dtype)
    reference.assert_within(by_nnx_jit, y, tol, what="nnx.jit")
    reference.assert_within(by_jax_jit, y, tol, what="split/merge + jax.jit")
    ref = oracle(name, dtype, n, hw)
    reference.assert_within(by_jax_jit, ref, reference.network_tolerance(nets.get(name), dtype, ref))


# --- refused input -------------------------------------------------------------------------------------------
def test_bad_spec_and_input_are_refused():
    from flax import nnx

    from jax_impl import MobileNet

    with pytest.raises(TypeError, match="reference.nets.MobileNet spec, got SE"):
        MobileNet(reference.SE(16), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="reference.nets.MobileNet spec, got ResNet"):
        MobileNet(nets.get("seresnet18"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="param_dtype=float64 needs 64-bit JAX"):
        MobileNet(nets.get("mobilenetv3_small_100"), param_dtype=np.float64, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="3 channels"):
        bridge().apply(loaded("mobilenetv3_small_100", "float32"), np.zeros((1, 8, 8, 4), np.float32))
    name = "efficientnet_b0"
    good, model = params(name, "float32"), loaded(name, "float32")
    with pytest.raises(reference.ParamError, match=r"missing keys: blocks\.1\.0\.conv_dw\.weight"):
        bridge().load_params(model, {k: v for k, v in good.items() if k != "blocks.1.0.conv_dw.weight"})
    bad = {**good, "blocks.2.0.conv_dw.weight": good["blocks.2.0.conv_dw.weight"][:-1]}
    with pytest.raises(reference.ParamError, match=r"shape mismatch for blocks\.2\.0\.conv_dw\.weight"):
        bridge().load_params(model, bad)
    exported = bridge().export_params(model)  # a refused load changed nothing
    assert all(exported[k].tobytes() == v.tobytes() for k, v in good.items())
