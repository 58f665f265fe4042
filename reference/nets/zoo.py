"""The named networks: each name is a spec (data), equal to the peer named beside it.

`ZOO`: the `ResNet` family. `MOBILE`: MobileNetV3 and EfficientNet-B0 (`MobileNet` specs) as timm,
torchvision and Keras applications define them; `ARCHITECTURES` groups the names that hold the same tensors.
Every backend builds both; `ALL` holds both and `get` reads it.
docs/reference/networks.md shows this table with parameter counts. Upstream definitions:
timm/models/resnet.py (the timm names), BangguWu/ECANet models/eca_resnet.py (``eca_resnet*``),
Jongchan/attention-module MODELS/model_resnet.py (``cbam_resnet*``, ``ResidualNet("ImageNet", depth,
1000, "CBAM")``), timm/models/mobilenetv3.py (``_gen_mobilenet_v3``) and timm/models/efficientnet.py
(``_gen_efficientnet``) for the ``arch_def`` rows below.
"""
from __future__ import annotations

from typing import NamedTuple

from .mobile import MobileNet, Row
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
    spec: type = ResNet  # the spec class `get` builds from ``fields``


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

# --- MobileNetV3 and EfficientNet: timm's arch_def rows --------------------------------------------------
# Row(block, repeats, kernel, stride, expansion, out_channels, se, activation); "nre" rows are ReLU
RE, HS, SW, M3, EF = "relu", "hard_swish", "silu", "mobilenetv3", "efficientnet"
MNV3_SMALL = (
    (Row("ds", 1, 3, 2, 1, 16, M3, RE),),
    (Row("ir", 1, 3, 2, 4.5, 24, None, RE), Row("ir", 1, 3, 1, 3.67, 24, None, RE)),
    (Row("ir", 1, 5, 2, 4, 40, M3, HS), Row("ir", 2, 5, 1, 6, 40, M3, HS)),
    (Row("ir", 2, 5, 1, 3, 48, M3, HS),),
    (Row("ir", 3, 5, 2, 6, 96, M3, HS),),
    (Row("cn", 1, 1, 1, 1, 576, None, HS),),
)
MNV3_LARGE = (
    (Row("ds", 1, 3, 1, 1, 16, None, RE),),
    (Row("ir", 1, 3, 2, 4, 24, None, RE), Row("ir", 1, 3, 1, 3, 24, None, RE)),
    (Row("ir", 3, 5, 2, 3, 40, M3, RE),),
    (Row("ir", 1, 3, 2, 6, 80, None, HS), Row("ir", 1, 3, 1, 2.5, 80, None, HS), Row("ir", 2, 3, 1, 2.3, 80, None, HS)),
    (Row("ir", 2, 3, 1, 6, 112, M3, HS),),
    (Row("ir", 3, 5, 2, 6, 160, M3, HS),),
    (Row("cn", 1, 1, 1, 1, 960, None, HS),),
)
EFFICIENTNET_B0 = (
    (Row("ds", 1, 3, 1, 1, 16, EF, SW),),
    (Row("ir", 2, 3, 2, 6, 24, EF, SW),),
    (Row("ir", 2, 5, 2, 6, 40, EF, SW),),
    (Row("ir", 3, 3, 2, 6, 80, EF, SW),),
    (Row("ir", 3, 5, 1, 6, 112, EF, SW),),
    (Row("ir", 4, 5, 2, 6, 192, EF, SW),),
    (Row("ir", 1, 3, 1, 6, 320, EF, SW),),
)
SMALL = dict(stages=MNV3_SMALL, stem_channels=16, activation=HS, head="mobilenetv3", head_channels=1024)
LARGE = dict(stages=MNV3_LARGE, stem_channels=16, activation=HS, head="mobilenetv3", head_channels=1280)
B0 = dict(stages=EFFICIENTNET_B0, stem_channels=32, activation=SW, head="efficientnet", head_channels=1280)
TF = dict(padding="same", bn_eps=1e-3)  # timm's tf_* ports of the TensorFlow checkpoints (BN_EPS_TF_DEFAULT)
TV_MNV3 = dict(bn_eps=1e-3)  # torchvision/models/mobilenetv3.py: BatchNorm2d(eps=0.001) with symmetric padding
# keras/src/applications: stride-2 convs ZeroPadding2D(correct_pad) + 'valid' (TF 'SAME'), BN eps 1e-3, and
# the preprocessing inside the model
K_MNV3 = dict(**TF, preprocessing="keras_mobilenetv3")
K_EFFNET = dict(**TF, preprocessing="keras_efficientnet")


def _mobile(fields, name, family, peer=None):
    return Entry(fields, peer or _timm(name), family, MobileNet)


def _keras(cls):
    return f"keras.applications.{cls}(weights=None, classifier_activation=None)"


MOBILE: dict[str, Entry] = {
    "mobilenetv3_small_100": _mobile(SMALL, "mobilenetv3_small_100", "mobilenetv3"),
    "mobilenetv3_large_100": _mobile(LARGE, "mobilenetv3_large_100", "mobilenetv3"),
    "tf_mobilenetv3_small_100": _mobile({**SMALL, **TF}, "tf_mobilenetv3_small_100", "mobilenetv3"),
    "tf_mobilenetv3_large_100": _mobile({**LARGE, **TF}, "tf_mobilenetv3_large_100", "mobilenetv3"),
    "efficientnet_b0": _mobile(B0, "efficientnet_b0", "efficientnet"),
    "tf_efficientnet_b0": _mobile({**B0, **TF}, "tf_efficientnet_b0", "efficientnet"),
    # torchvision (its efficientnet_b0 is timm's, above)
    "mobilenet_v3_small": _mobile({**SMALL, **TV_MNV3}, "", "mobilenetv3",
                                  "torchvision.models.mobilenet_v3_small(weights=None)"),
    "mobilenet_v3_large": _mobile({**LARGE, **TV_MNV3}, "", "mobilenetv3",
                                  "torchvision.models.mobilenet_v3_large(weights=None)"),
    # Keras applications: the input is raw pixels in [0, 255]
    "MobileNetV3Small": _mobile({**SMALL, **K_MNV3}, "", "mobilenetv3", _keras("MobileNetV3Small")),
    "MobileNetV3Large": _mobile({**LARGE, **K_MNV3}, "", "mobilenetv3", _keras("MobileNetV3Large")),
    "EfficientNetB0": _mobile({**B0, **K_EFFNET}, "", "efficientnet", _keras("EfficientNetB0")),
}
# name -> architecture: the models of one architecture hold the same tensors and differ only in padding,
# BatchNorm eps and preprocessing (what a conversion between them states)
ARCHITECTURES = {
    "mobilenetv3_small": ("mobilenetv3_small_100", "tf_mobilenetv3_small_100", "mobilenet_v3_small",
                          "MobileNetV3Small"),
    "mobilenetv3_large": ("mobilenetv3_large_100", "tf_mobilenetv3_large_100", "mobilenet_v3_large",
                          "MobileNetV3Large"),
    "efficientnet_b0": ("efficientnet_b0", "tf_efficientnet_b0", "EfficientNetB0"),
}
ARCHITECTURE_OF = {name: arch for arch, names in ARCHITECTURES.items() for name in names}
TIMM_MOBILE = tuple(n for n in MOBILE if MOBILE[n].peer.startswith("timm."))
KERAS_MOBILE = tuple(n for n in MOBILE if MOBILE[n].peer.startswith("keras."))  # raw pixels in, preprocessing inside
# peer layout -> the MobileNet names its models compute (torchvision's efficientnet_b0 is timm's)
LAYOUT_MODELS = {"timm": TIMM_MOBILE, "keras-applications": KERAS_MOBILE,
                 "torchvision": ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")}
FUNCTION_FIELDS = ("padding", "bn_eps", "preprocessing")  # what differs between the models of one architecture


def counterpart(spec, layout: str):
    """The model that a ``layout`` checkpoint of ``spec``'s tensors is loaded into: ``spec`` itself where the
    layout's peer has it (attnport's own layouts always), else the peer's model of the same architecture --
    timm's of the same padding style, torchvision's, or Keras applications' -- with ``spec``'s classes."""
    arch = ARCHITECTURE_OF.get(getattr(spec, "name", ""))
    if arch is None or layout not in LAYOUT_MODELS:
        return spec
    held = [n for n in ARCHITECTURES[arch] if n in LAYOUT_MODELS[layout]]
    if spec.name in held:
        return spec
    pick = next((n for n in held if get(n).padding == spec.padding), held[0])
    return get(pick, num_classes=spec.num_classes, in_chans=spec.in_chans)


def function_differences(a, b) -> list[tuple[str, object, object]]:
    """``[(field, a's value, b's value)]`` for the `FUNCTION_FIELDS` in which specs ``a`` and ``b`` differ."""
    return [(f, getattr(a, f, None), getattr(b, f, None)) for f in FUNCTION_FIELDS
            if getattr(a, f, None) != getattr(b, f, None)]


ALL: dict[str, Entry] = {**ZOO, **MOBILE}


def get(name: str, **overrides):
    """The spec of network ``name`` (one of `ALL`: `NAMES` and `MOBILE`), with fields replaced by
    ``overrides`` (``num_classes=10``, ``eca_kernels=(3, 3, 5, 7)``, ``padding="same"``, ...)."""
    known = {**ZOO, **MOBILE}  # read now, not at import: a registry may grow (or be patched in a test)
    if name not in known:
        import difflib

        close = difflib.get_close_matches(str(name), tuple(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; choose one of {', '.join(known)}"
        raise ValueError(f"unknown network {name!r}{hint}")
    entry = known[name]
    fields = {**entry.fields, "name": name}
    unknown = set(overrides) - set(entry.spec.__dataclass_fields__)
    if unknown:
        raise TypeError(f"{name}: unknown spec fields {sorted(unknown)}; a {entry.spec.__name__} spec has "
                        f"{sorted(entry.spec.__dataclass_fields__)}")
    return entry.spec(**{**fields, **overrides})
