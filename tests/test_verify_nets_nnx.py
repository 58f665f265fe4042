"""`attnport.verify` on whole Flax NNX networks (attnport/netverify.py): an independent hand-written SE-ResNet
(tests/gallery/net_nnx_ports.py) passes with every stage read, attnport's own jax_impl SE-ResNet passes, and
each buggy port of the gallery fails with exactly its catalogue entry, its first divergence at the intended
stage and the intended layer named; the BatchNorm momentum bug only with ``check_training=True``.

NNX verify compiles the module once per input shape and structure (`jax_impl.adapter` runs it under
``jax.jit``) and runs it eagerly once more for the taps, so each candidate is verified once per module
(`reports`), the ports are built without Flax's initializers (`net_nnx_ports.build`), and the specs have one
block per stage."""
from __future__ import annotations

import json

import numpy as np
import pytest

import attnport
import reference

from helpers import get_bridge

TINY_ABS = 1e-12  # a correct float64 port's stage outputs differ by rounding only


@pytest.fixture(scope="module")
def gallery():
    get_bridge("jax")
    from gallery import net_nnx_ports

    return net_nnx_ports


@pytest.fixture(scope="module")
def reports(gallery):
    """``reports(key)``: verify's report, computed once per module. ``key``: a bug of ``gallery.BUGS`` (None:
    the correct port), ``"bn_momentum/inference"`` (that port verified without check_training) or
    ``"jax_impl"`` (attnport's own NNX network)."""
    done, models = {}, {}

    def model(spec, bug):  # one module per (spec, bug), built once: verify loads its weights in place
        if (spec, bug) not in models:
            models[spec, bug] = gallery.build(spec, bug)
        return models[spec, bug]

    def get(key):
        if key not in done:
            se = gallery.SE_SPEC
            if key == "jax_impl":
                done[key] = attnport.verify(get_bridge("jax").build(se, dtype="float64", init="zeros"), se)
            elif key == "avg_down_count_include_pad":
                done[key] = attnport.verify(model(gallery.AVG_DOWN_SPEC, key), gallery.AVG_DOWN_SPEC)
            elif key == "bn_momentum":
                done[key] = attnport.verify(model(se, key), se, check_training=True)
            elif key == "bn_momentum/inference":
                done[key] = attnport.verify(model(se, "bn_momentum"), se)
            elif key == "bn_momentum/loader":
                done[key] = attnport.verify(model(se, "bn_momentum"), se, loader=gallery.load, check_training=True)
            elif key == "classifier_transposed":  # the correct port, loaded by a loader with the bug
                done[key] = attnport.verify(model(se, None), se, loader=gallery.load_classifier_reshaped)
            else:
                done[key] = attnport.verify(model(se, key), se)
        return done[key]

    return get


def _rows(report):
    return {row.stage: row for row in report.network.stages}


def _assert_passes_everywhere(report, spec):
    assert report.passed, report.to_markdown()
    assert report.diagnosis == [] and report.missing == [] and report.unmapped == []
    assert report.network.first_divergence is None and report.network.explains_all is None
    blocks = [b.path for b in spec.blocks()]
    rows = report.network.stages
    assert [r.stage for r in rows] == ["stem", *blocks, "head"]
    # the stem is read as the input of layer1.0 (NNX interception), each block at its own module
    assert [r.tap for r in rows] == ["layer1.0", *blocks, "logits"]
    for r in rows:
        assert r.passed is True and r.max_abs is not None and r.max_abs < TINY_ABS, report.to_markdown()
    assert {c.name for c in report.cases} == {"unit_normal_odd", "even", "non_square"}
    assert all(c.passed and c.max_abs < TINY_ABS for c in report.cases), report.to_markdown()


def test_the_independent_port_passes_with_every_stage_read_and_weights_mapped_by_name(gallery, reports):
    report = reports(None)
    _assert_passes_everywhere(report, gallery.SE_SPEC)
    assert len(report.mapping) == len(gallery.SE_SPEC.param_table())
    for line in ("layer1.0.conv1.weight [64, 64, 3, 3] -> layer1.0.conv1.kernel (transpose(2, 3, 1, 0))",
                 "layer2.0.downsample.1.running_var [128] -> layer2.0.downsample.1.var (as is)",
                 "layer4.0.se.fc1.weight [32, 512] -> layer4.0.se.fc1.kernel (transpose(1, 0))",
                 "fc.weight [10, 512] -> fc.kernel (transpose(1, 0))"):
        assert line in report.mapping


def test_attnports_own_nnx_network_passes(gallery, reports):
    _assert_passes_everywhere(reports("jax_impl"), gallery.SE_SPEC)


def _assert_diagnosed(report, entry, stage, layer):
    """Exactly ``entry`` named, the first divergence at ``stage`` (every stage before it read and within
    tolerance), ``layer`` in the diagnosis' detail."""
    assert not report.passed
    assert report.matches() == [entry], report.to_markdown()
    net = report.network
    assert net.first_divergence == stage, report.to_markdown()
    names = [r.stage for r in net.stages]
    assert all(r.passed is True for r in net.stages[:names.index(stage)]), report.to_markdown()
    assert _rows(report)[stage].passed is False
    assert net.span == (stage,)  # the stage before it was read and passed: the diagnosis ran this stage only
    assert layer in report.diagnosis[0].detail, report.diagnosis[0].detail


def test_avg_down_pool_counting_the_padding_is_named_at_the_first_stride_2_shortcut(gallery, reports):
    """Only the pools of odd-sized inputs are padded: layer1.0's stride-1 avg_down shortcut has no pool, so
    the first divergence is layer2.0 (9x9 and 9x10 inputs); layers 3 and 4 have the same bug (5x5, 3x3)."""
    report = reports("avg_down_count_include_pad")
    _assert_diagnosed(report, "avg_down_pool", "layer2.0", "layer2.0.downsample.0")
    detail = report.diagnosis[0].detail
    assert "count_include_pad=True" in detail and "ceil_mode=False" not in detail
    assert "the same at every such layer explains the rest" in detail
    assert report.network.explains_all is True and report.network.diverges_again is None
    assert report.missing == [] and report.unmapped == []
    # the deep stem and the avg_down shortcut are mapped by name (nnx.List indices as in timm's Sequential)
    assert "conv1.1.running_mean [16] -> conv1.1.mean (as is)" in report.mapping
    assert "conv1.6.weight [32, 16, 3, 3] -> conv1.6.kernel (transpose(2, 3, 1, 0))" in report.mapping
    assert "layer2.0.downsample.1.weight [128, 64, 1, 1] -> layer2.0.downsample.1.kernel (transpose(2, 3, 1, 0))" \
        in report.mapping
    assert "layer1.0.se.conv.weight [1, 1, 3] -> layer1.0.se.conv.kernel (transpose(2, 1, 0))" in report.mapping


def test_the_shortcut_pool_is_torchs_and_the_bug_divides_a_cut_window_by_4(gallery):
    """The gallery's pool against the oracle's torch ``AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)``
    and the catalogue's alternative, on a 5x6 input: only the last row's windows are cut (1 row of 2)."""
    import jax
    from attnport.netverify import AvgPoolCounted
    from reference.nets.layers import avg_pool_ceil

    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3))
    with jax.enable_x64(True):
        right, counted = (np.asarray(gallery.ShortcutPool(2, count_include_pad=bug)(jax.device_put(x)))
                          for bug in (False, True))
    exact = avg_pool_ceil(x)
    assert right.shape == counted.shape == exact.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(right, exact, rtol=0, atol=1e-15)
    np.testing.assert_allclose(counted, AvgPoolCounted(["p"], "counted").avg_pool("p", x), rtol=0, atol=1e-15)
    np.testing.assert_allclose(counted[:, :2], exact[:, :2], rtol=0, atol=1e-15)  # whole windows agree
    np.testing.assert_allclose(counted[:, 2], exact[:, 2] / 2, rtol=0, atol=1e-15)  # 2 of 4 inside: halved
    assert np.abs(counted[:, 2] - exact[:, 2]).max() > 0.1


def test_the_residual_added_before_the_attention_is_named_at_the_first_block(gallery, reports):
    report = reports("residual_before_attention")
    _assert_diagnosed(report, "residual_before_attention", "layer1.0", "layer1.0")
    detail = report.diagnosis[0].detail
    assert detail.startswith("layer1.0: relu(attention(y + shortcut))"), detail
    # the bug is in every block: the same alternative at every block explains every later stage and the logits
    assert "the same at every such layer explains the rest" in detail
    assert report.network.explains_all is True and report.network.diverges_again is None
    assert "explains every later stage and the logits" in report.to_markdown()


def test_bn_momentum_in_torchs_convention_passes_inference(gallery, reports):
    """momentum=0.1 in Flax weighs the running average by 0.1: inference reads the running statistics only,
    so the port is exact and verify without check_training passes it."""
    report = reports("bn_momentum/inference")
    _assert_passes_everywhere(report, gallery.SE_SPEC)
    assert report.network.training == [] and report.network.training_diagnosis == []


def test_bn_momentum_in_torchs_convention_is_named_by_check_training(gallery, reports):
    report = reports("bn_momentum")
    assert not report.passed
    assert report.matches() == ["bn_momentum"], report.to_markdown()
    assert all(c.passed for c in report.cases) and all(r.passed for r in report.network.stages)
    assert report.network.first_divergence is None
    # one inferred momentum per BatchNorm of the spec, each 0.9 in torch's convention (1 - the spec's 0.1)
    bns = [info.name.rsplit(".", 1)[0] for info in gallery.SE_SPEC.param_table() if info.kind == "bn_mean"]
    momenta = dict(report.network.training)
    assert sorted(momenta) == sorted(bns) and len(bns) == 12
    for name, m in momenta.items():
        assert m == pytest.approx(1 - reference.nets.BN_MOMENTUM, abs=1e-6), (name, m)
    detail = report.diagnosis[0].detail
    assert "momentum 0.9 where the spec's is 0.1" in detail and "at 12 of 12 BatchNorms" in detail
    assert json.loads(report.to_json())["network"]["bn_momentum"][0] == {"bn": "bn1", "momentum": momenta["bn1"]}


def test_bn_momentum_is_named_by_check_training_when_a_loader_fills_the_weights(gallery, reports):
    report = reports("bn_momentum/loader")
    assert all(c.passed for c in report.cases)  # the loader is right: inference is exact
    assert len(report.network.training) == 12, report.to_markdown()
    assert report.matches() == ["bn_momentum"] and not report.passed


def test_a_classifier_kernel_reshaped_by_the_loader_is_named_at_the_head(gallery, reports):
    report = reports("classifier_transposed")
    _assert_diagnosed(report, "classifier_transposed", "head", "fc.weight")
    assert report.diagnosis[0].detail == "fc.weight's [out, in] bytes read as [in, out]"
    assert report.network.explains_all is True and report.network.diverges_again is None
    assert report.mapping == ["loaded by the given loader"]
    assert all(r.max_abs < TINY_ABS for r in report.network.stages[:-1])  # every block exact: only fc is wrong


def _flat(module) -> dict:
    from flax import nnx

    return {".".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(module))}


def test_the_gallery_loader_is_right_but_for_the_classifier(gallery):
    """The gallery's loader puts every canonical parameter where attnport's own loader
    (`jax_impl.load_params`) puts it in attnport's network, in float64 (the BatchNorm statistics too);
    its buggy variant differs in ``fc.kernel`` only."""
    spec = gallery.SE_SPEC
    params = spec.init_params(seed=0, dtype=np.float64)
    mine, theirs = gallery.build(spec), get_bridge("jax").build(spec, dtype="float64", init="zeros")
    gallery.load(mine, params)
    get_bridge("jax").load_params(theirs, params)
    a, b = _flat(mine), _flat(theirs)
    assert sorted(a) == sorted(b) and len(a) == len(params)
    for name in a:
        assert a[name].dtype == np.float64, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    gallery.load_classifier_reshaped(mine, params)
    c = _flat(mine)
    assert [n for n in c if not np.array_equal(c[n], b[n])] == ["fc.kernel"]
    np.testing.assert_array_equal(c["fc.kernel"], params["fc.weight"].reshape(512, 10))
