"""Preset tables for SE, ECA and CBAM, and spot values of make_divisible.

Every expected number below was worked out by hand from the rule as the upstream source
states it (the file is named above each table), not from attnport's code. docs/reference/modules.md "Presets"
summarises the same facts. The tables are literal on purpose: a wrong preset has to
disagree with a number a person can check, not with a second copy of the same rule.
"""
import pytest

import reference

CHANNELS = (16, 24, 32, 40, 64, 96, 100, 128, 200, 256, 512, 1024, 2048)


# --- make_divisible ---------------------------------------------------------------------
# timm/layers/helpers.py make_divisible, torchvision `_make_divisible` (models/mobilenetv2.py,
# later ops/misc.py) and keras/src/applications/mobilenet_v3.py `_depth` share one rule;
# only timm exposes round_limit (torchvision and Keras fix it at 0.9):
#   n = max(min_value or divisor, int(v + divisor / 2) // divisor * divisor)
#   if n < round_limit * v: n += divisor
# (v, divisor, min_value, round_limit) -> result, each worked by hand.
MAKE_DIVISIBLE_SPOTS = [
    # MobileNetV3 SE widths, make_divisible(expanded / 4, 8). Large (torchvision
    # mobilenetv3.py _mobilenet_v3_conf, Keras MobileNetV3Large): expanded 72/120/480/672/960.
    ((18, 8, None, 0.9), 24),    # 72 / 4: int(22)//8*8 = 16 < 0.9*18 = 16.2, so 16 + 8
    ((30, 8, None, 0.9), 32),    # 120 / 4: int(34)//8*8 = 32
    ((120, 8, None, 0.9), 120),  # 480 / 4
    ((168, 8, None, 0.9), 168),  # 672 / 4
    ((240, 8, None, 0.9), 240),  # 960 / 4
    # Small (Keras MobileNetV3Small): expanded 16/96/240/120/144/288/576
    ((4, 8, None, 0.9), 8),      # 16 / 4: int(8)//8*8 = 8
    ((24, 8, None, 0.9), 24),
    ((60, 8, None, 0.9), 64),    # 240 / 4: int(64)//8*8 = 64
    ((36, 8, None, 0.9), 40),    # 144 / 4: int(40)//8*8 = 40
    ((72, 8, None, 0.9), 72),
    ((144, 8, None, 0.9), 144),
    # EfficientNet stems and heads, keras/src/applications/efficientnet.py round_filters
    # (the same rule, divisor 8): 32 * width and 1280 * width for B2/B3/B4/B6.
    ((32 * 1.1, 8, None, 0.9), 32),      # 35.2: int(39.2)=39 -> 32, not < 31.68
    ((32 * 1.2, 8, None, 0.9), 40),      # 38.4: int(42.4)=42 -> 40
    ((32 * 1.4, 8, None, 0.9), 48),      # 44.8: int(48.8)=48 -> 48
    ((32 * 1.8, 8, None, 0.9), 56),      # 57.6: int(61.6)=61 -> 56, not < 51.84
    ((1280 * 1.2, 8, None, 0.9), 1536),
    ((1280 * 1.4, 8, None, 0.9), 1792),
    # The 10 % rule and its switch-off (timm SEModule passes round_limit=0).
    ((10, 8, None, 0.9), 16),    # 8 < 9, so +8
    ((10, 8, None, 0.0), 8),
    ((18, 8, None, 0.0), 16),
    ((12.5, 8, None, 0.0), 16),  # timm SEModule, C = 200: int(16.5)=16
    ((8, 8, None, 0.0), 8),      # timm SEModule, C = 128
    ((11.9375, 8, None, 0.0), 8),  # timm SEModule, C = 191: still 8 (int(15.94)=15 -> 8)
    ((12, 8, None, 0.0), 16),    # timm SEModule, C = 192: first C above 8
    # min_value: the floor is min_value or divisor.
    ((3, 8, None, 0.9), 8),
    ((3, 8, 16, 0.9), 16),
    # divisor 1 with round_limit 0 is round-half-up (timm CbamModule, rd_divisor=1).
    ((2.5, 1, None, 0.0), 3),    # CBAM C = 40
    ((1.5, 1, None, 0.0), 2),    # CBAM C = 24
    ((6.25, 1, None, 0.0), 6),   # CBAM C = 100
    ((12.5, 1, None, 0.0), 13),  # CBAM C = 200
    ((0.25, 1, None, 0.0), 1),   # floor of 1 (min_value or divisor)
]


@pytest.mark.parametrize("args,expected", MAKE_DIVISIBLE_SPOTS)
def test_make_divisible_spot_values(args, expected):
    v, divisor, min_value, round_limit = args
    got = reference.make_divisible(v, divisor, min_value=min_value, round_limit=round_limit)
    assert got == expected
    assert type(got) is int


def test_make_divisible_defaults_are_divisor_8_and_the_10_percent_rule():
    assert reference.make_divisible(18) == 24
    assert reference.make_divisible(10) == 16
    assert reference.make_divisible(3.5) == 8


# --- SE reduced widths ------------------------------------------------------------------
# article (the article's Keras code, docs/reference/modules.md "The modules"): ratio 4, max(1, C // 4).
SE_ARTICLE = {16: 4, 24: 6, 32: 8, 40: 10, 64: 16, 96: 24, 100: 25, 128: 32, 200: 50,
              256: 64, 512: 128, 1024: 256, 2048: 512}
# paper / timm legacy timm/models/senet.py: max(1, C // 16).
SE_PAPER = {16: 1, 24: 1, 32: 2, 40: 2, 64: 4, 96: 6, 100: 6, 128: 8, 200: 12,
            256: 16, 512: 32, 1024: 64, 2048: 128}
# timm/layers/squeeze_excite.py SEModule: make_divisible(C * 1/16, 8, round_limit=0.).
# Never below 8; every C <= 191 gives 8 (C <= 128 -> 8, C = 200 -> 16).
SE_TIMM = {16: 8, 24: 8, 32: 8, 40: 8, 64: 8, 96: 8, 100: 8, 128: 8, 200: 16,
           256: 16, 512: 32, 1024: 64, 2048: 128}
# MobileNetV3, keras/src/applications/mobilenet_v3.py _se_block: _depth(filters * 0.25)
# (timm: round_channels(C * 0.25); torchvision: _make_divisible(C // 4, 8), equal for these C).
# C = 40: 10 -> int(14)//8*8 = 8 < 9, so 16; C = 200: 50 -> 48 (not < 45).
SE_MOBILENETV3 = {16: 8, 24: 8, 32: 8, 40: 16, 64: 16, 96: 24, 100: 24, 128: 32, 200: 48,
                  256: 64, 512: 128, 1024: 256, 2048: 512}

SE_TABLES = {"article": SE_ARTICLE, "paper": SE_PAPER, "timm": SE_TIMM,
             "mobilenetv3": SE_MOBILENETV3}


@pytest.mark.parametrize("preset,c,expected",
                         [(p, c, t[c]) for p, t in SE_TABLES.items() for c in CHANNELS])
def test_se_preset_reduced_width(preset, c, expected):
    spec = getattr(reference.SE, preset)(c)
    assert spec.channels == c
    assert spec.reduced_channels == expected


def test_se_mobilenetv3_uses_the_float_quarter_like_keras_and_timm():
    # Keras _depth(C * 0.25) and timm round_channels(C * 0.25) differ from torchvision's
    # _make_divisible(C // 4, 8) only where the 10 % rule sees the lost fraction: C = 143 gives
    # 35.75 -> 32 < 32.175 -> 40 (Keras/timm), but 35 -> 32 (torchvision). Real MobileNetV3
    # expanded widths are multiples of 8, where all three agree.
    assert reference.SE.mobilenetv3(143).reduced_channels == 40
    assert reference.SE.mobilenetv3(107).reduced_channels == 32


@pytest.mark.parametrize("c,squeeze", [(16, 1), (64, 7), (96, 24), (100, 100), (2048, 3)])
def test_se_torchvision_uses_squeeze_channels_verbatim(c, squeeze):
    # torchvision/ops/misc.py SqueezeExcitation(input_channels, squeeze_channels): no rounding.
    spec = reference.SE.torchvision(c, squeeze)
    assert (spec.channels, spec.reduced_channels) == (c, squeeze)


# EfficientNet: keras/src/applications/efficientnet.py block(): filters_se =
# max(1, int(filters_in * se_ratio)), se_ratio 0.25, from the block *input* filters_in;
# torchvision efficientnet.py: max(1, cnf.input_channels // 4). (C, in_channels) -> width.
SE_EFFICIENTNET = {
    # in_channels = C // 4
    (16, 4): 1, (24, 6): 1, (32, 8): 2, (40, 10): 2, (64, 16): 4, (96, 24): 6, (100, 25): 6,
    (128, 32): 8, (200, 50): 12, (256, 64): 16, (512, 128): 32, (1024, 256): 64,
    (2048, 512): 128,
    # in_channels = C // 6 (expand ratio 6); (16, 2): int(0.5) = 0 -> clamped to 1
    (16, 2): 1, (24, 4): 1, (32, 5): 1, (40, 6): 1, (64, 10): 2, (96, 16): 4, (100, 16): 4,
    (128, 21): 5, (200, 33): 8, (256, 42): 10, (512, 85): 21, (1024, 170): 42,
    (2048, 341): 85,
    # EfficientNet-B0 DEFAULT_BLOCKS_ARGS: (filters_in * expand_ratio, filters_in); (96, 16)
    # above is block2a
    (32, 32): 8, (144, 24): 6, (240, 40): 10, (480, 80): 20, (672, 112): 28, (1152, 192): 48,
}


@pytest.mark.parametrize("c,in_channels,expected",
                         [(c, i, w) for (c, i), w in SE_EFFICIENTNET.items()])
def test_se_efficientnet_width_from_block_input(c, in_channels, expected):
    spec = reference.SE.efficientnet(c, in_channels)
    assert spec.channels == c
    assert spec.reduced_channels == expected


def test_se_efficientnet_width_follows_in_channels_not_c():
    # Same C, different block inputs -> different widths; C * 0.25 (168) is never used.
    widths = {i: reference.SE.efficientnet(672, i).reduced_channels for i in (112, 56, 28)}
    assert widths == {112: 28, 56: 14, 28: 7}
    assert reference.SE.efficientnet(96, 16).reduced_channels == reference.SE.efficientnet(
        960, 16).reduced_channels == 4


# --- SE activation and gate --------------------------------------------------------------
# article/paper/timm SEModule: ReLU -> sigmoid; EfficientNet (Keras activation="swish",
# torchvision nn.SiLU): SiLU -> sigmoid; MobileNetV3 (Keras hard_sigmoid = ReLU6(x+3)/6,
# torchvision nn.Hardsigmoid): ReLU -> hard_sigmoid. All use biased 1x1 convs / Dense.
SE_FIELDS = [
    (lambda c: reference.SE.article(c), "relu", "sigmoid"),
    (lambda c: reference.SE.paper(c), "relu", "sigmoid"),
    (lambda c: reference.SE.timm(c), "relu", "sigmoid"),
    (lambda c: reference.SE.torchvision(c, 8), "relu", "sigmoid"),
    (lambda c: reference.SE.torchvision(c, 8, activation="hard_swish", gate="hard_sigmoid"),
     "hard_swish", "hard_sigmoid"),
    (lambda c: reference.SE.efficientnet(c, 16), "silu", "sigmoid"),
    (lambda c: reference.SE.mobilenetv3(c), "relu", "hard_sigmoid"),
]


@pytest.mark.parametrize("make,activation,gate", SE_FIELDS,
                         ids=["article", "paper", "timm", "torchvision", "torchvision-custom",
                              "efficientnet", "mobilenetv3"])
def test_se_preset_activation_and_gate(make, activation, gate):
    spec = make(96)
    assert (spec.activation, spec.gate, spec.bias) == (activation, gate, True)


# --- ECA kernel sizes --------------------------------------------------------------------
# paper formula (arXiv:1910.03151 eq. 12; the official BangguWu/ECANet eca_module.py takes
# k_size as an argument and does not compute it): t = int(abs((log2 C + 1) / 2)), k = t if odd
# else t + 1. timm/layers/eca.py EcaModule and CecaModule both apply max(k, 3).
# Thresholds: t steps at C = 2, 8, 32, 128, 512, 2048 (log2 C = 1, 3, 5, 7, 9, 11).
ECA_KERNELS = {  # C: (paper, timm EcaModule, timm CecaModule)
    1: (1, 3, 3), 2: (1, 3, 3), 3: (1, 3, 3), 4: (1, 3, 3), 5: (1, 3, 3), 6: (1, 3, 3),
    7: (1, 3, 3), 8: (3, 3, 3), 127: (3, 3, 3), 128: (5, 5, 5), 2047: (5, 5, 5),
    2048: (7, 7, 7),
}
ECA_PRESETS = [("paper", 0, "zeros"), ("timm", 1, "zeros"), ("circular", 2, "circular")]


@pytest.mark.parametrize("preset,column,padding_mode", ECA_PRESETS)
@pytest.mark.parametrize("c", sorted(ECA_KERNELS))
def test_eca_preset_kernel_size(preset, column, padding_mode, c):
    spec = getattr(reference.ECA, preset)(c)
    assert spec.channels == c
    assert spec.kernel_size == ECA_KERNELS[c][column]
    assert spec.padding_mode == padding_mode


# --- CBAM ----------------------------------------------------------------------------------
# official Jongchan/attention-module MODELS/cbam.py ChannelGate: Linear(C, C // 16), bias
# (nn.Linear default); the API clamps to >= 1 (upstream would build a 0-wide layer for C < 16).
CBAM_OFFICIAL = {16: 1, 24: 1, 32: 2, 40: 2, 64: 4, 96: 6, 100: 6, 128: 8, 200: 12,
                 256: 16, 512: 32, 1024: 64, 2048: 128}
# timm/layers/cbam.py ChannelAttn: make_divisible(C * 1/16, rd_divisor=1, round_limit=0.),
# i.e. int(C/16 + 0.5): 24 -> 1.5 -> 2, 40 -> 2.5 -> 3, 100 -> 6.25 -> 6, 200 -> 12.5 -> 13.
CBAM_TIMM = {16: 1, 24: 2, 32: 2, 40: 3, 64: 4, 96: 6, 100: 6, 128: 8, 200: 13,
             256: 16, 512: 32, 1024: 64, 2048: 128}


@pytest.mark.parametrize("preset,c,expected",
                         [("official", c, CBAM_OFFICIAL[c]) for c in CHANNELS]
                         + [("timm", c, CBAM_TIMM[c]) for c in CHANNELS])
def test_cbam_preset_reduced_width(preset, c, expected):
    spec = getattr(reference.CBAM, preset)(c)
    assert spec.channels == c
    assert spec.reduced_channels == expected


def test_cbam_c40_official_and_timm_disagree():
    assert reference.CBAM.official(40).reduced_channels == 2
    assert reference.CBAM.timm(40).reduced_channels == 3


# official: ChannelPool = cat(max, mean); BasicConv(2, 1, 7, padding=3, relu=False) with
# BatchNorm2d(eps=1e-5, momentum=0.01); sigmoid gate.
# timm: SpatialAttn cat(mean, amax); ConvNormAct(2, 1, 7, apply_act=False), norm_layer
# nn.BatchNorm2d -> BatchNormAct2d(eps=1e-5, momentum=0.1) (timm/layers/norm_act.py); mlp_bias
# False; gate 'sigmoid'. Both use reduction 16.
CBAM_FIELDS = {
    "official": dict(ratio=16, mlp_bias=True, spatial_kernel=7, spatial_order=("max", "mean"),
                     spatial_norm=True, bn_eps=1e-5, bn_momentum=0.01, gate="sigmoid"),
    "timm": dict(ratio=16, mlp_bias=False, spatial_kernel=7, spatial_order=("mean", "max"),
                 spatial_norm=True, bn_eps=1e-5, bn_momentum=0.1, gate="sigmoid"),
}


@pytest.mark.parametrize("preset", sorted(CBAM_FIELDS))
def test_cbam_preset_fields(preset):
    spec = getattr(reference.CBAM, preset)(64)
    got = {name: getattr(spec, name) for name in CBAM_FIELDS[preset]}
    got["spatial_order"] = tuple(got["spatial_order"])
    assert got == CBAM_FIELDS[preset]
