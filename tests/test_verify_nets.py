"""`attnport.verify` on a whole network in PyTorch: correct ports pass stage by stage; each buggy port of
tests/gallery/net_torch_ports.py is located at the right block and named with exactly its catalogue entry;
two bugs: the first is located and named, and the report says the rest is not explained."""
import json

import numpy as np
import pytest

import attnport
import reference

torch = pytest.importorskip("torch")
torch_impl = pytest.importorskip("torch_impl")
from gallery import net_torch_ports as ports  # noqa: E402


def test_attnports_own_network_passes_at_every_stage():
    spec = ports.SMALL
    report = attnport.verify(torch_impl.ResNet(spec, dtype=torch.float64).eval(), spec)
    assert report.passed, report.to_markdown()
    assert {c.name for c in report.cases} == {"unit_normal_odd", "even", "non_square"}
    names = [b.path for b in spec.blocks()]
    assert [r.stage for r in report.network.stages] == ["stem", *names, "head"]
    assert all(r.passed for r in report.network.stages)  # every stage read (None would be "not read")
    assert [r.tap for r in report.network.stages] == ["layer1.0", *names, "logits"]
    assert all(r.max_abs < 1e-10 for r in report.network.stages)
    assert report.network.first_divergence is None and report.diagnosis == []


def test_an_independent_port_passes_and_its_zero_padded_max_pool_is_exact():
    """The stem's max-pool reads a ReLU's output (>= 0), so zero padding equals torch's -inf padding: the
    maxpool_zero_padding entry must not fire on a port that is right."""
    spec = ports.SMALL
    for bugs in ((), ("maxpool_zeros",)):
        report = attnport.verify(ports.build(spec, bugs), spec)
        assert report.passed, report.to_markdown()
        assert all(r.passed for r in report.network.stages)


def test_the_zero_padded_max_pool_alternative_differs_where_the_input_is_negative():
    from attnport.netverify import ZeroPaddedMaxPool

    x = -1.0 - np.random.default_rng(0).random((1, 5, 5, 2))
    exact = reference.nets.EXACT.max_pool("maxpool", x)
    zero = ZeroPaddedMaxPool(["maxpool"]).max_pool("maxpool", x)
    want = torch.nn.functional.max_pool2d(torch.nn.functional.pad(torch.tensor(x).permute(0, 3, 1, 2),
                                                                  (1, 1, 1, 1)), 3, 2).permute(0, 2, 3, 1)
    np.testing.assert_array_equal(zero, want.numpy())
    assert np.all(zero[:, 0, 0] == 0) and np.all(exact < 0)


@pytest.mark.parametrize("bug", sorted(ports.GALLERY))
def test_gallery_port_is_located_and_named(bug):
    spec, entry, stage, layer = ports.GALLERY[bug]
    report = attnport.verify(ports.build(spec, (bug,)), spec)
    assert not report.passed
    assert report.network.first_divergence == stage
    assert report.matches() == [entry], report.to_markdown()
    assert layer in report.diagnosis[0].detail
    assert report.network.explains_all is True and report.network.diverges_again is None
    rows = {r.stage: r for r in report.network.stages}
    before = [r for r in report.network.stages[:[r.stage for r in report.network.stages].index(stage)]]
    assert all(r.passed for r in before) and rows[stage].passed is False


def test_two_bugs_in_different_blocks_the_first_is_named_and_the_rest_left_unexplained():
    spec = ports.SMALL
    report = attnport.verify(ports.build(spec, ("bn_eps@layer2.0.bn2", "attention_missing@layer3.0")), spec)
    assert not report.passed
    assert report.network.first_divergence == "layer2.0"
    assert report.matches() == ["bn_eps"]
    assert report.network.explains_all is False
    assert report.network.diverges_again == "layer3.0"
    text = report.to_markdown()
    assert "diverges again at `layer3.0`" in text and "**FIRST DIVERGENCE**" in text
    data = json.loads(report.to_json())
    assert data["network"]["first_divergence"] == "layer2.0" and data["network"]["explains_all"] is False


def test_a_missing_attention_module_is_listed_and_located():
    spec = ports.SMALL
    model = torch_impl.ResNet(spec, dtype=torch.float64).eval()
    model.layer3[0].se = torch.nn.Identity()
    report = attnport.verify(model, spec)
    assert not report.passed
    assert report.missing == [f"layer3.0.se.{n}" for n in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")]
    assert report.network.first_divergence == "layer3.0" and report.matches() == ["attention_missing"]


def test_a_port_whose_blocks_have_other_names_is_read_through_taps():
    """A module found under a prefix (``backbone.layer3.0``) is read as that block; a stage named otherwise
    is not read, so the span widens to the next read stage, and ``taps=`` names it."""
    spec = ports.SMALL
    wrapped = torch.nn.Module()
    wrapped.backbone = ports.build(spec, ("attention_missing@layer3.0",))
    wrapped.forward = wrapped.backbone.forward
    report = attnport.verify(wrapped, spec)
    assert report.network.stages[3].tap == "backbone.layer3.0"
    assert report.network.first_divergence == "layer3.0" and report.matches() == ["attention_missing"]

    renamed = ports.build(spec, ("attention_missing@layer3.0",))
    renamed.stage3 = renamed.layer3
    del renamed.layer3
    renamed.stages[2] = "stage3"
    blind = attnport.verify(renamed, spec)
    assert [r.passed for r in blind.network.stages][2:5] == [True, None, False]
    assert blind.network.first_divergence == "layer4.0" and blind.network.span == ("layer3.0", "layer4.0")
    assert blind.matches() == ["attention_missing"] and "layer3.0.se" in blind.diagnosis[0].detail
    assert any("layer3.0" in n and "taps=" in n for n in blind.notes)
    report = attnport.verify(renamed, spec, taps={"layer3.0": "stage3.0"})
    assert report.network.first_divergence == "layer3.0" and report.matches() == ["attention_missing"]


def test_a_timm_mobilenet_verifies_against_its_own_style_only():
    """The reference's MobileNetV3 (TF 'SAME' style) verifies timm's tf_mobilenetv3_small_100, and refuses the
    torch-style mobilenetv3_small_100 whose weights have the same shapes (symmetric padding, BN eps 1e-5)."""
    timm = pytest.importorskip("timm")
    spec = reference.nets.get("tf_mobilenetv3_small_100", num_classes=10)
    same_style = timm.create_model("tf_mobilenetv3_small_100", pretrained=False, num_classes=10).eval()
    other_style = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=10).eval()
    report = attnport.verify(same_style, spec)
    assert report.passed, report.to_markdown()
    wrong = attnport.verify(other_style, spec)
    assert not wrong.passed
    assert wrong.network.first_divergence == "stem"
    assert wrong.matches()[0] in ("same_padding", "bn_eps")
