"""`attnport.verify` on a whole network: a correct port passes at its logits with the network tolerance, a
wrong one fails and is never explained by the block catalogue."""
import numpy as np
import pytest

import attnport
import reference

torch = pytest.importorskip("torch")
torch_impl = pytest.importorskip("torch_impl")


@pytest.fixture(scope="module")
def spec():
    return reference.nets.get("seresnet18", num_classes=10)


def test_a_correct_torch_network_passes_on_odd_even_and_non_square_inputs(spec):
    report = attnport.verify(torch_impl.ResNet(spec, dtype=torch.float64).eval(), spec)
    assert report.passed, report.to_markdown()
    assert {c.name for c in report.cases} == {"unit_normal_odd", "even", "non_square"}
    assert all(c.max_abs < 1e-10 * max(1.0, c.atol / c.rtol) for c in report.cases)
    assert "network_tolerance" in report.to_markdown()


@pytest.mark.parametrize("bug", ["bn_eps", "stride_2_same_padding"])
def test_a_wrong_network_fails_unexplained(spec, bug):
    model = torch_impl.ResNet(spec, dtype=torch.float64).eval()
    if bug == "bn_eps":
        model.layer2[0].bn1.eps = 1e-3
    else:  # TF-style 'SAME' at stride 2 on the first downsampling block: pad right/bottom only
        conv = model.layer2[0].conv1
        conv.padding = (0, 0)
        inner = conv.forward
        conv.forward = lambda x: inner(torch.nn.functional.pad(x, (0, 1, 0, 1)))
    report = attnport.verify(model, spec)
    assert not report.passed and report.diagnosis == []
    assert any("block catalogue does not apply" in n for n in report.notes)
    assert "no known bug explains this" in report.to_markdown()


def test_a_timm_mobilenet_verifies_against_its_own_style_only():
    """The reference's MobileNetV3 (TF 'SAME' style) verifies timm's tf_mobilenetv3_small_100, and refuses the
    torch-style mobilenetv3_small_100 whose weights have the same shapes (symmetric padding, BN eps 1e-5)."""
    timm = pytest.importorskip("timm")
    spec = reference.nets.get("tf_mobilenetv3_small_100", num_classes=10)
    same_style = timm.create_model("tf_mobilenetv3_small_100", pretrained=False, num_classes=10).eval()
    other_style = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=10).eval()
    report = attnport.verify(same_style, spec)
    assert report.passed, report.to_markdown()
    assert not attnport.verify(other_style, spec).passed
