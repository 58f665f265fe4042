"""The named networks: each name is a `ResNet` spec (data), equal to the peer named beside it.

docs/reference/networks.md shows this table with parameter counts. Upstream definitions:
timm/models/resnet.py (the timm names), BangguWu/ECANet models/eca_resnet.py (``eca_resnet*``),
Jongchan/attention-module MODELS/model_resnet.py (``cbam_resnet*``, ``ResidualNet("ImageNet", depth,
1000, "CBAM")``).
"""
from __future__ import annotations

from typing import NamedTuple

from .resnet import ResNet

B, BN = "basic", "bottleneck"
R18, R34, R50, R101, R152 = (2, 2, 2, 2), (3, 4, 6, 3), (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3)
D = dict(stem_type="deep", stem_width=32, avg_down=True)   # timm's "-D" (bag of tricks) options
T = dict(stem_type="deep_tiered", stem_width=32, avg_down=True)
X32x4 = dict(cardinality=32, base_width=4)


class Entry(NamedTuple):
    fields: dict
    peer: str       # what the model must equal
    family: str     # docs grouping


def _timm(name):
    return f"timm.create_model({name!r})"


ZOO: dict[str, Entry] = {
    # baselines without attention
    "resnet18": Entry(dict(block=B, layers=R18), _timm("resnet18"), "baseline"),
    "resnet50": Entry(dict(block=BN, layers=R50), _timm("resnet50"), "baseline"),
    "resnet50d": Entry(dict(block=BN, layers=R50, **D), _timm("resnet50d"), "baseline"),
    # timm SE-ResNet / SE-ResNeXt
    "seresnet18": Entry(dict(block=B, layers=R18, attention="se"), _timm("seresnet18"), "timm-se"),
    "seresnet34": Entry(dict(block=B, layers=R34, attention="se"), _timm("seresnet34"), "timm-se"),
    "seresnet50": Entry(dict(block=BN, layers=R50, attention="se"), _timm("seresnet50"), "timm-se"),
    "seresnet101": Entry(dict(block=BN, layers=R101, attention="se"), _timm("seresnet101"), "timm-se"),
    "seresnet152": Entry(dict(block=BN, layers=R152, attention="se"), _timm("seresnet152"), "timm-se"),
    "seresnext26d_32x4d": Entry(dict(block=BN, layers=R18, attention="se", **X32x4, **D),
                                _timm("seresnext26d_32x4d"), "timm-se"),
    "seresnext50_32x4d": Entry(dict(block=BN, layers=R50, attention="se", **X32x4),
                               _timm("seresnext50_32x4d"), "timm-se"),
    "seresnext101_32x4d": Entry(dict(block=BN, layers=R101, attention="se", **X32x4),
                                _timm("seresnext101_32x4d"), "timm-se"),
    # timm ECA-ResNet
    "ecaresnet26t": Entry(dict(block=BN, layers=R18, attention="eca", **T), _timm("ecaresnet26t"), "timm-eca"),
    "ecaresnet50d": Entry(dict(block=BN, layers=R50, attention="eca", **D), _timm("ecaresnet50d"), "timm-eca"),
    "ecaresnet50t": Entry(dict(block=BN, layers=R50, attention="eca", **T), _timm("ecaresnet50t"), "timm-eca"),
    "ecaresnet101d": Entry(dict(block=BN, layers=R101, attention="eca", **D), _timm("ecaresnet101d"), "timm-eca"),
    "ecaresnetlight": Entry(dict(block=BN, layers=(1, 1, 11, 3), stem_width=32, avg_down=True, attention="eca"),
                            _timm("ecaresnetlight"), "timm-eca"),
    # timm ResNet with CbamModule in every block (no timm name registers one)
    "cbamresnet18": Entry(dict(block=B, layers=R18, attention="cbam"),
                          "timm.models.resnet.ResNet(BasicBlock, (2, 2, 2, 2), block_args=dict(attn_layer='cbam'))",
                          "timm-cbam"),
    "cbamresnet50": Entry(dict(block=BN, layers=R50, attention="cbam"),
                          "timm.models.resnet.ResNet(Bottleneck, (3, 4, 6, 3), block_args=dict(attn_layer='cbam'))",
                          "timm-cbam"),
    # official ECA-Net: k per stage as the released checkpoints fix it
    "eca_resnet18": Entry(dict(block=B, layers=R18, attention="eca", attention_preset="official",
                               eca_kernels=(3, 5, 7, 7)), "ECANet eca_resnet18(k_size=[3, 5, 7, 7])", "official-eca"),
    "eca_resnet34": Entry(dict(block=B, layers=R34, attention="eca", attention_preset="official",
                               eca_kernels=(3, 3, 5, 7)), "ECANet eca_resnet34(k_size=[3, 3, 5, 7])", "official-eca"),
    "eca_resnet50": Entry(dict(block=BN, layers=R50, attention="eca", attention_preset="official",
                               eca_kernels=(3, 5, 5, 7)), "ECANet eca_resnet50(k_size=[3, 5, 5, 7])", "official-eca"),
    "eca_resnet101": Entry(dict(block=BN, layers=R101, attention="eca", attention_preset="official",
                                eca_kernels=(3, 3, 5, 7)), "ECANet eca_resnet101(k_size=[3, 3, 5, 7])", "official-eca"),
    "eca_resnet152": Entry(dict(block=BN, layers=R152, attention="eca", attention_preset="official",
                                eca_kernels=(3, 3, 5, 7)), "ECANet eca_resnet152(k_size=[3, 3, 5, 7])", "official-eca"),
    # official CBAM (ImageNet form; its AvgPool2d(7) head is the global average at 224 px)
    "cbam_resnet18": Entry(dict(block=B, layers=R18, attention="cbam", attention_preset="official"),
                           "ResidualNet('ImageNet', 18, 1000, 'CBAM')", "official-cbam"),
    "cbam_resnet34": Entry(dict(block=B, layers=R34, attention="cbam", attention_preset="official"),
                           "ResidualNet('ImageNet', 34, 1000, 'CBAM')", "official-cbam"),
    "cbam_resnet50": Entry(dict(block=BN, layers=R50, attention="cbam", attention_preset="official"),
                           "ResidualNet('ImageNet', 50, 1000, 'CBAM')", "official-cbam"),
    "cbam_resnet101": Entry(dict(block=BN, layers=R101, attention="cbam", attention_preset="official"),
                            "ResidualNet('ImageNet', 101, 1000, 'CBAM')", "official-cbam"),
}

NAMES = tuple(ZOO)


def get(name: str, **overrides) -> ResNet:
    """The spec of network ``name`` (one of `NAMES`), with fields replaced by ``overrides``
    (``num_classes=10``, ``eca_kernels=(3, 3, 5, 7)``, ...)."""
    if name not in ZOO:
        import difflib

        close = difflib.get_close_matches(str(name), NAMES, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; choose one of {', '.join(NAMES)}"
        raise ValueError(f"unknown network {name!r}{hint}")
    fields = {**ZOO[name].fields, "name": name}
    unknown = set(overrides) - set(ResNet.__dataclass_fields__)
    if unknown:
        raise TypeError(f"{name}: unknown spec fields {sorted(unknown)}; a network spec has "
                        f"{sorted(ResNet.__dataclass_fields__)}")
    return ResNet(**{**fields, **overrides})
