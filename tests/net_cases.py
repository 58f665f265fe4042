"""The whole-network cases every backend's network tests share: which models, which inputs, the peers.

One representative per family and code path, small inputs with odd and even sizes (a stride-2 conv, the
max-pool and the ceil-mode average pool treat an odd size differently), one forward per model, backend
and dtype: the suite's budget.
"""
from __future__ import annotations

import functools

import numpy as np

import reference
from reference import nets

# name -> what it covers
FORWARD_MODELS = {
    "resnet50d": "baseline, bottleneck, deep stem, avg_down",
    "seresnet18": "timm SE, basic block, 7x7 stem",
    "seresnext26d_32x4d": "timm SE, grouped 3x3 conv, deep stem, avg_down",
    "ecaresnet26t": "timm ECA, tiered stem",
    "cbamresnet18": "timm CbamModule",
    "eca_resnet18": "official ECA-Net, k per stage",
    "cbam_resnet18": "official CBAM",
}
# (N, H = W): an odd and an even size; 33 -> 17 -> 9 -> 5 -> 3 -> 2 exercises every odd-size rule
SIZES = ((1, 33), (2, 32))
DTYPES = ("float64", "float32")


def pixels(n: int, hw: int, dtype: str = "float32", data_format: str = "channels_last") -> np.ndarray:
    """Raw pixels ~ U(0, 255) [N, H, W, 3] (or NCHW): what a Keras applications model reads."""
    x = np.random.default_rng(7 + hw).uniform(0, 255, (n, hw, hw, 3)).astype(reference.numpy_dtype(dtype))
    return x if data_format == "channels_last" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@functools.lru_cache(maxsize=None)
def spec(name: str):
    return nets.get(name)


@functools.lru_cache(maxsize=None)
def params(name: str, dtype: str = "float64", seed: int = 0) -> dict:
    """Canonical parameters of ``name`` (cached; tests must not mutate them)."""
    return spec(name).init_params(seed=seed, dtype=reference.numpy_dtype(dtype))


def net_input(n: int, hw: int, dtype: str = "float64", data_format: str = "channels_last", seed: int = 0):
    x = np.random.default_rng(seed + 1000 * n + hw).standard_normal((n, hw, hw, 3)).astype(reference.numpy_dtype(dtype))
    return x if data_format == "channels_last" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@functools.lru_cache(maxsize=None)
def oracle(name: str, n: int, hw: int, data_format: str = "channels_last") -> np.ndarray:
    """float64 logits of the float64 parameters on `net_input` (the input cast to float64)."""
    return nets.forward(spec(name), params(name, "float64"), net_input(n, hw, "float64", data_format), data_format)


@functools.lru_cache(maxsize=None)
def pixel_oracle(name: str, n: int, hw: int, dtype: str = "float32", data_format: str = "channels_last") -> np.ndarray:
    """float64 logits of ``dtype``'s parameters on ``dtype``'s `pixels` (both as float64), the model's
    preprocessing included."""
    return nets.forward(spec(name), params(name, dtype), pixels(n, hw, dtype, data_format), data_format)


def timm_model(name: str):
    """The timm peer of ``name`` with pretrained=False, in eval mode (timm registers no CBAM ResNet:
    ``ResNet(..., block_args=dict(attn_layer="cbam"))``)."""
    import timm
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    s = spec(name)
    if name.startswith("cbamresnet"):
        model = ResNet(BasicBlock if s.block == "basic" else Bottleneck, s.layers, block_args=dict(attn_layer="cbam"))
    else:
        model = timm.create_model(name, pretrained=False)
    return model.eval()
