"""`attnport.verify` on whole Keras networks (attnport/netverify.py): an independent hand-written SE-ResNet
passes with every stage read, attnport's own tf_impl SE-ResNet passes, and each buggy port of the gallery
(tests/gallery/net_keras_ports.py) fails with exactly its catalogue entry, its first divergence at the
intended stage and the intended layer named. Each candidate is verified once (`reports`) and checked by one
test, so pytest-xdist never verifies it on two workers."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import attnport
import reference
from attnport import netverify
from attnport.verification import battery

from helpers import get_bridge

TINY_ABS = 1e-12  # a correct float64 port's stage outputs differ by rounding only (measured up to 3.3e-14)


@pytest.fixture(scope="module")
def gallery():
    get_bridge("tf")
    from gallery import net_keras_ports

    return net_keras_ports


@pytest.fixture(scope="module")
def reports(gallery):
    """``reports(key)``: verify's report on ``gallery.port(key)`` (None: the correct port; "tf_impl":
    attnport's own Keras SE-ResNet), computed once per module; the MobileNetV3 ports share one model."""
    done, mobile = {}, []

    def get(key):
        if key not in done:
            if key == "tf_impl":
                spec = gallery.SMALL_SPEC
                done[key] = attnport.verify(get_bridge("tf").build(spec, dtype="float64"), spec)
            else:
                if key not in (None, *gallery.RESNET_BUGS) and not mobile:
                    mobile.append(get_bridge("tf").build(gallery.mobile_spec(), dtype="float64"))
                candidate, spec, kwargs = gallery.port(key, mobile=mobile[0] if mobile else None)
                done[key] = attnport.verify(candidate, spec, **kwargs)
        return done[key]

    return get


def _stage_rows(report):
    return {row.stage: row for row in report.network.stages}


def test_the_independent_port_passes_with_every_stage_read(gallery, reports):
    report = reports(None)
    assert report.passed, report.to_markdown()
    assert report.diagnosis == [] and report.network.first_divergence is None
    rows = report.network.stages
    blocks = [b.path for b in gallery.SMALL_SPEC.blocks()]
    assert [r.stage for r in rows] == ["stem", *blocks, "head"]
    # the stem is read as the input of layer1.0's first layer, each block at its last layer, "head" = logits
    assert [r.tap for r in rows] == ["layer1.0.conv1", *(f"{b}.out" for b in blocks), "logits"]
    for r in rows:
        assert r.passed is True, r
        assert r.max_abs is not None and r.max_abs < TINY_ABS, r
        assert r.max_abs <= r.atol, r


def test_attnports_own_keras_seresnet_passes(gallery, reports):
    report = reports("tf_impl")
    assert report.passed, report.to_markdown()
    rows = report.network.stages
    assert [r.tap for r in rows] == ["layer1.0.conv1", *(f"{b.path}.act2" for b in gallery.SMALL_SPEC.blocks()),
                                     "logits"]
    assert all(r.passed is True and r.max_abs < TINY_ABS for r in rows), report.to_markdown()


def _assert_diagnosed(gallery, report, bug):
    entry, stage, detail = gallery.GALLERY[bug]
    assert not report.passed and not all(c.passed for c in report.cases)
    assert report.matches() == [entry], report.to_markdown()
    assert report.network.first_divergence == stage, report.to_markdown()
    assert report.diagnosis[0].detail.startswith(detail), report.diagnosis[0].detail
    # the one bug explains everything after the first divergence
    assert report.network.explains_all is True and report.network.diverges_again is None, report.to_markdown()
    rows = report.network.stages
    first = [r.stage for r in rows].index(stage)
    assert all(r.passed is not False for r in rows[:first]), report.to_markdown()
    assert rows[first].passed is False


def test_same_padding_at_layer2_0_conv1(gallery, reports):
    report = reports("same_padding")
    _assert_diagnosed(gallery, report, "same_padding")
    assert report.diagnosis[0].detail == "layer2.0.conv1 padded TF 'SAME' (extra zero right/bottom)"
    # TF 'SAME' pads a 3x3 stride-2 conv as torch does on an odd size (layer2.0's input is 9 x 9 for 33 x 33)
    assert [(c.name, c.passed) for c in report.cases] == [("unit_normal_odd", True), ("even", False),
                                                           ("non_square", False)]
    assert [r.passed for r in report.network.stages[:2]] == [True, True]  # stem, layer1.0
    # the report names the stage in its Markdown table and its JSON alike
    marked = [line for line in report.to_markdown().splitlines() if "FIRST DIVERGENCE" in line]
    assert len(marked) == 1
    stage = re.match(r"\| ([^ |]+) \|", marked[0]).group(1)
    assert stage == "layer2.0"
    data = json.loads(report.to_json())
    assert data["network"]["first_divergence"] == stage
    assert [r["stage"] for r in data["network"]["stages"] if r["passed"] is False][0] == stage


def test_keras_default_bn_eps_everywhere(gallery, reports):
    report = reports("bn_eps_default")
    _assert_diagnosed(gallery, report, "bn_eps_default")
    assert all(r.passed is False for r in report.network.stages), report.to_markdown()
    assert report.diagnosis[0].detail == ("bn1 with eps 0.001 instead of 1e-05; the same at every such layer "
                                          "explains the rest")


def test_a_depthwise_kernel_reshaped_by_the_loader(gallery, reports):
    report = reports("depthwise_layout")
    _assert_diagnosed(gallery, report, "depthwise_layout")
    block = gallery.DEPTHWISE_BLOCK
    assert report.diagnosis[0].detail == f"{block}.conv_dw kernel moved with a reshape instead of a transpose"
    assert _stage_rows(report)[block].tap.startswith(block + ".")
    assert "loaded by the given loader: unmapped variables are not known, so not checked" in report.notes


def test_preprocessing_applied_twice_around_a_nested_model(gallery, reports):
    """The wrapper nests the network as one layer: no stage is read, the logits fail on every input, and the
    diagnosis runs over every stage at the logits."""
    report = reports("preprocessing_twice")
    assert not report.passed and not any(c.passed for c in report.cases)
    rows = report.network.stages
    assert all(r.passed is None and r.tap is None for r in rows[:-1])
    assert rows[-1].stage == "head" and rows[-1].passed is False
    assert any(n.startswith("no module of the candidate matched stem, blocks.0.0") for n in report.notes)
    assert rows[-1].error is None, rows[-1].error
    _assert_diagnosed(gallery, report, "preprocessing_twice")
    assert report.diagnosis[0].detail == "keras_mobilenetv3 applied twice"


# keras.applications' EfficientNetB0 preprocesses with Rescaling(1 / 255) then Normalization
# (keras/src/applications/efficientnet.py): a user who rescales outside too computes normalize(x / 255 / 255).
# A full verify of that port runs the diagnosis over every stage at the logits (slow), so this checks the
# entry's own alternatives at the logits.
def test_efficientnet_rescaled_outside_too_is_a_preprocessing_alternative(gallery):
    bridge = get_bridge("tf")
    spec = reference.nets.get("EfficientNetB0", num_classes=10)
    params = spec.init_params(seed=0, dtype=np.float64)
    wrapper = gallery.preprocessing_twice(bridge.load_params(bridge.build(spec, dtype="float64"), params))
    x = battery(spec, 0)[0].x
    got = np.asarray(wrapper(x, training=False), dtype=np.float64)
    stages = reference.nets.stages(spec)
    calls = netverify.inventory(stages[:1], params, x)["stem"]
    entry = next(e for e in netverify.NET_CATALOGUE if e.name == "preprocessing")
    alternatives = entry.make(spec, calls, calls)
    details = [a.detail for a in alternatives]
    assert {"keras_efficientnet applied twice", "keras_efficientnet not applied"} <= set(details), details
    assert not reference.within(got, netverify.run_stages(stages, params, x)[-1],
                                reference.network_tolerance(spec, "float64", got))  # the port is wrong
    agree = []
    for alt in alternatives:
        want = netverify.run_stages(stages, params, x, alt.here)[-1]
        agree.append(bool(reference.within(got, want, reference.network_tolerance(spec, "float64", want))))
    assert [d for d, a in zip(details, agree) if a] == [
        "keras_efficientnet's rescale applied outside too, before the model's own preprocessing"], details
