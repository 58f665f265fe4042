"""The float64 oracle for gradients: an analytic vector-Jacobian product for every spec.

    vjp(spec, params, x, dy) = (dx, dparams),   the gradient of  sum(forward(spec, params, x) * dy)
                                                with respect to x and every canonical parameter.

Written by hand, backwards through the same formulas as the forward (`se.py`, `eca.py`, `cbam.py`),
channels-last internally; NumPy only.

Conventions where the forward is not differentiable:

* **Kinks** (`DERIVATIVES`, the value taken *at* the kink, matching torch's backward kernels):
  relu'(0) = 0; hard_sigmoid' = 1/6 on the open interval (-3, 3) and 0 elsewhere, so 0 at +-3;
  hard_sigmoid_keras2' = 0.2 on the open interval (-2.5, 2.5) and 0 elsewhere;
  hard_swish' = 0 for x < -3, 1 for x > 3 and (2x + 3) / 6 on the closed [-3, 3]
  (torch's CPU kernel: -0.5 at x = -3 and 1.5 at x = 3).
* **Max-pooling ties** (CBAM's global max over H, W and its max over C): the incoming gradient is
  split evenly among the tied maxima; with m elements equal to the max, each gets 1/m of it.
  (torch's `amax` backward does the same; `max(dim)` and max pooling send it all to one element.)
* **BatchNorm in inference mode** (CBAM ``spatial_norm``): ``bn.running_mean`` and
  ``bn.running_var`` are statistics, not trainable parameters (torch buffers, Keras
  non-trainable weights, Flax ``batch_stats``), so their gradient is defined as zero, even though
  the inference-mode output does depend on them. ``bn.weight`` and ``bn.bias`` get their gradients.
"""
from __future__ import annotations

import math

import numpy as np

from . import activations, ops
from .cbam import CBAM, spatial_conv, spatial_stats
from .eca import ECA, eca_windows
from .oracle import from_channels_last, prepare, to_channels_last
from .se import SE
from .validation import check_cotangent


# --- derivatives of the activations and gates, f'(x) elementwise ---------------------------------

def d_relu(x):
    """relu'(x) = 1 for x > 0, else 0 (0 at the kink)."""
    return (x > 0).astype(np.float64)


def d_sigmoid(x):
    """sigmoid'(x) = s (1 - s)."""
    s = activations.sigmoid(x)
    return s * (1.0 - s)


def d_silu(x):
    """silu'(x) = s + x s (1 - s), s = sigmoid(x)."""
    s = activations.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def d_hard_sigmoid(x):
    """(relu6(x + 3) / 6)' = 1/6 strictly inside (-3, 3), else 0 (torch: ``-3 < x < 3``)."""
    return np.where((x > -3.0) & (x < 3.0), 1.0 / 6.0, 0.0)


def d_hard_sigmoid_keras2(x):
    """clip(0.2 x + 0.5, 0, 1)' = 0.2 strictly inside (-2.5, 2.5), else 0."""
    return np.where((x > -2.5) & (x < 2.5), 0.2, 0.0)


def d_hard_swish(x):
    """(x relu6(x + 3) / 6)' as torch's CPU kernel: 0 for x < -3, 1 for x > 3, (2x + 3) / 6 between."""
    return np.where(x < -3.0, 0.0, np.where(x > 3.0, 1.0, (2.0 * x + 3.0) / 6.0))


_erfc = np.frompyfunc(math.erfc, 1, 1)


def d_gelu(x):
    """Exact GELU, (x Phi(x))' = Phi(x) + x phi(x), Phi(x) = erfc(-x / sqrt 2) / 2."""
    x = np.asarray(x, dtype=np.float64)
    cdf = 0.5 * _erfc(-x / math.sqrt(2.0)).astype(np.float64)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return cdf + x * pdf


def d_gelu_tanh(x):
    """tanh GELU, u = sqrt(2/pi) (x + 0.044715 x^3), t = tanh u:
    0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    c = math.sqrt(2.0 / math.pi)
    t = np.tanh(c * (x + 0.044715 * x ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x)


# Every name in `activations.ACTIVATIONS` and `activations.GATES` -> its derivative.
DERIVATIVES = {
    "relu": d_relu, "silu": d_silu, "hard_swish": d_hard_swish, "gelu": d_gelu, "gelu_tanh": d_gelu_tanh,
    "sigmoid": d_sigmoid, "hard_sigmoid": d_hard_sigmoid, "hard_sigmoid_keras2": d_hard_sigmoid_keras2,
}


# --- shared pieces ---------------------------------------------------------------------------------

def _mlp_vjp(p: dict, v: np.ndarray, dout: np.ndarray, act: str, grads: dict) -> np.ndarray:
    """Backward of ``out = act(v @ W1.T + b1) @ W2.T + b2``; v [N, C], dout [N, C] -> dv [N, C].

    Accumulates dW1 [R, C], db1 [R], dW2 [C, R], db2 [C] into ``grads`` (biases only if present).
    """
    a = v @ p["fc1.weight"].T + p.get("fc1.bias", 0.0)            # [N, R]
    h = activations.ACTIVATIONS[act](a)
    grads["fc2.weight"] += dout.T @ h                               # [C, R]
    if "fc2.bias" in p:
        grads["fc2.bias"] += dout.sum(axis=0)
    da = (dout @ p["fc2.weight"]) * DERIVATIVES[act](a)              # [N, R]
    grads["fc1.weight"] += da.T @ v                                 # [R, C]
    if "fc1.bias" in p:
        grads["fc1.bias"] += da.sum(axis=0)
    return da @ p["fc1.weight"]                                     # [N, C]


def max_vjp(v: np.ndarray, dmax: np.ndarray, axis) -> np.ndarray:
    """Backward of ``v.max(axis)``: ``dmax`` split evenly among the tied maxima; v's shape."""
    vmax = v.max(axis=axis, keepdims=True)
    is_max = v == vmax
    return is_max * np.expand_dims(dmax, axis) / is_max.sum(axis=axis, keepdims=True)


def _zero_grads(spec, p: dict) -> dict:
    return {name: np.zeros(shape) for name, shape in spec.param_shapes().items()}


# --- one function per family, channels-last x and dy [N, H, W, C] ----------------------------------

def se_vjp(spec: SE, p: dict, x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, dict]:
    """SE backward: x, dy [N, H, W, C] -> dx [N, H, W, C], canonical dparams.

    y = x * g,  g = gate(z),  z = mlp(s),  s = mean_{H,W}(x).
    """
    grads = _zero_grads(spec, p)
    hh, ww = x.shape[1:3]
    s = ops.global_pool(x)                                                           # [N, C]
    z = ops.channel_mlp(p, s, spec.activation)
    g = activations.GATES[spec.gate](z)                                              # [N, C]
    dz = (dy * x).sum(axis=(1, 2)) * DERIVATIVES[spec.gate](z)                       # [N, C]
    ds = _mlp_vjp(p, s, dz, spec.activation, grads)                                  # [N, C]
    dx = dy * g[:, None, None, :] + ds[:, None, None, :] / (hh * ww)
    return dx, grads


def eca_vjp(spec: ECA, p: dict, x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, dict]:
    """ECA backward: x, dy [N, H, W, C] -> dx [N, H, W, C], {"conv.weight": [1, 1, k]}.

    y = x * sigmoid(z),  z[c] = sum_j w[j] s_pad[c + j],  s_pad[q] = s[idx[q]] (0 where idx = -1).
    """
    hh, ww, c = x.shape[1:]
    k, w = spec.kernel_size, p["conv.weight"][0, 0]
    idx = spec.padded_indices()                                       # [C + 2 pad]
    s = ops.global_pool(x)                                            # [N, C]
    windows = eca_windows(spec, s)                                    # [N, C, k]
    z = windows @ w
    dz = (dy * x).sum(axis=(1, 2)) * d_sigmoid(z)                     # [N, C]
    dw = np.einsum("ncj,nc->j", windows, dz)
    ds_pad = np.zeros((s.shape[0], c + 2 * spec.padding))
    for j in range(k):                                                # transpose of the correlation
        ds_pad[:, j:j + c] += w[j] * dz
    ds = np.zeros_like(s)                                             # transpose of the padding
    for q in np.flatnonzero(idx >= 0):                                # (circular: wrapped copies add up)
        ds[:, idx[q]] += ds_pad[:, q]
    dx = dy * activations.sigmoid(z)[:, None, None, :] + ds[:, None, None, :] / (hh * ww)
    return dx, {"conv.weight": dw.reshape(1, 1, k)}


def _conv2d_same_vjp(s: np.ndarray, w: np.ndarray, dz: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Backward of `ops.conv2d_same`: s [N, H, W, Cin], w [1, Cin, k, k], dz [N, H, W]
    -> ds [N, H, W, Cin], dw [1, Cin, k, k]."""
    hh, ww = s.shape[1:3]
    k = w.shape[-1]
    s_pad = np.pad(s, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(s_pad, (k, k), axis=(1, 2))  # [N, H, W, Cin, k, k]
    dw = np.einsum("nhwcij,nhw->cij", windows, dz)[None]
    ds_pad = np.zeros_like(s_pad)
    for i in range(k):
        for j in range(k):
            ds_pad[:, i:i + hh, j:j + ww, :] += dz[..., None] * w[0, :, i, j]
    return ds_pad[:, pad:pad + hh, pad:pad + ww, :], dw


def cbam_vjp(spec: CBAM, p: dict, x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, dict]:
    """CBAM backward: x, dy [N, H, W, C] -> dx [N, H, W, C], canonical dparams.

    x1 = x * Mc,  Mc = gate(zc),  zc = mlp(avg_{H,W} x) + mlp(max_{H,W} x)          [N, C]
    y = x1 * Ms,  Ms = gate(u),   u = bn(zs),  zs = conv(S),  S = stats_C(x1)       [N, H, W]
    """
    grads = _zero_grads(spec, p)
    gate, d_gate = activations.GATES[spec.gate], DERIVATIVES[spec.gate]

    # forward, keeping what the backward needs
    hh, ww, c = x.shape[1:]
    s_avg, s_max = ops.global_pool(x), ops.global_pool(x, "max")                     # [N, C]
    zc = ops.channel_mlp(p, s_avg) + ops.channel_mlp(p, s_max)
    mc = gate(zc)
    x1 = ops.scale_channels(x, mc)
    s = spatial_stats(spec, x1)                                                       # [N, H, W, 2]
    zs = spatial_conv(spec, p, s)
    if spec.spatial_norm:
        inv_std = 1.0 / np.sqrt(p["bn.running_var"][0] + spec.bn_eps)
        z_hat = (zs - p["bn.running_mean"][0]) * inv_std
        u = z_hat * p["bn.weight"][0] + p["bn.bias"][0]
    else:
        u = zs
    ms = gate(u)                                                                      # [N, H, W]

    # spatial branch
    du = (dy * x1).sum(axis=-1) * d_gate(u)                                           # [N, H, W]
    if spec.spatial_norm:
        grads["bn.weight"][0] = (du * z_hat).sum()
        grads["bn.bias"][0] = du.sum()
        dzs = du * p["bn.weight"][0] * inv_std   # bn.running_mean / running_var: zero by convention
    else:
        dzs = du
    ds, grads["conv.weight"] = _conv2d_same_vjp(s, p["conv.weight"], dzs, spec.padding)
    d_stat = {name: ds[..., i] for i, name in enumerate(spec.spatial_order)}
    dx1 = dy * ms[..., None] + d_stat["mean"][..., None] / c + max_vjp(x1, d_stat["max"], axis=-1)

    # channel branch
    dzc = (dx1 * x).sum(axis=(1, 2)) * d_gate(zc)                                     # [N, C]
    ds_avg = _mlp_vjp(p, s_avg, dzc, "relu", grads)
    ds_max = _mlp_vjp(p, s_max, dzc, "relu", grads)
    dx = dx1 * mc[:, None, None, :] + ds_avg[:, None, None, :] / (hh * ww) \
        + max_vjp(x, ds_max, axis=(1, 2))
    return dx, grads


VJPS = {SE: se_vjp, ECA: eca_vjp, CBAM: cbam_vjp}


def vjp(spec, params, x, dy, data_format: str = "channels_last") -> tuple[np.ndarray, dict]:
    """Gradient of ``sum(forward(spec, params, x, data_format) * dy)``, in float64.

    ``x``, ``dy``: [N, H, W, C] for "channels_last", [N, C, H, W] for "channels_first"; validated as
    `reference.forward` validates ``x`` (the same prologue, `reference.oracle.prepare`). Returns
    ``(dx, dparams)``: float64 ``dx`` with x's shape and data format, and ``dparams`` with exactly
    ``spec.param_shapes()``'s names and shapes.
    """
    fn, p, x, x64 = prepare(spec, params, x, data_format, VJPS)
    dy64 = to_channels_last(check_cotangent(x, dy).astype(np.float64), data_format)
    dx, grads = fn(spec, p, x64, dy64)
    return from_channels_last(dx, data_format), grads
