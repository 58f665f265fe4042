"""An independent NumPy port of SE / ECA / CBAM (explicit loops and einsum, not reference's code),
with switchable bugs. ``port(spec, *bugs)`` returns ``f(x, params, data_format="channels_last")``.

Bugs (each a realistic porting mistake; the catalogue entry it should match is in BUGS):
"""
from __future__ import annotations

import math

import numpy as np

BUGS = {
    "transposed": "weight_transposed",      # s @ W instead of s @ W.T
    "nhwc_always": "channel_axis_wrong",    # ignores data_format: NCHW read as NHWC
    "centre_tap": "eca_conv_layout",        # conv over [N, 1, C]: a length-1 sequence
    "timm_kernel": "eca_kernel_rule",       # computes k = max(paper k, 3) and insists on it
    "parity_down": "eca_kernel_parity",     # even t -> t - 1
    "keras2_hard_sigmoid": "hard_sigmoid_keras2",
    "gelu_tanh": "gelu_tanh",
    "no_gate": "gate_missing",
    "sum_pool": "sum_pooling",
    "order_swapped": "cbam_spatial_order",
    "eps_1e-3": "bn_eps",
    "no_bias": "mlp_bias_dropped",
    "convolve": "kernel_flipped",
    "circular": "eca_padding",
}


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _gelu(z):
    erf = np.vectorize(math.erf)
    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


def _gelu_tanh(z):
    return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))


ACTS = {"relu": lambda z: np.maximum(z, 0.0), "silu": lambda z: z * _sigmoid(z), "gelu": _gelu,
        "gelu_tanh": _gelu_tanh, "hard_swish": lambda z: z * np.clip(z + 3.0, 0.0, 6.0) / 6.0}


def _gate(name, bugs):
    if "no_gate" in bugs:
        return lambda z: z
    if name == "hard_sigmoid":
        if "keras2_hard_sigmoid" in bugs:
            return lambda z: np.clip(0.2 * z + 0.5, 0.0, 1.0)
        return lambda z: np.minimum(np.maximum(z + 3.0, 0.0), 6.0) / 6.0
    if name == "hard_sigmoid_keras2":
        return lambda z: np.clip(0.2 * z + 0.5, 0.0, 1.0)
    return _sigmoid


def _dense(v, w, b, bugs):
    out = np.einsum("ni,io->no", v, w) if "transposed" in bugs else np.einsum("ni,oi->no", v, w)
    return out if b is None or "no_bias" in bugs else out + b


def _conv1d_channels(s, w, mode, bugs):
    """s [N, C], w [k]: cross-correlation along C, 'same' padding."""
    if "convolve" in bugs:
        w = w[::-1]
    n, c = s.shape
    k = len(w)
    p = k // 2
    out = np.zeros_like(s)
    for j in range(c):
        for t in range(k):
            src = j + t - p
            if "circular" in bugs or mode == "circular":
                src %= c
            if 0 <= src < c:
                out[:, j] += w[t] * s[:, src]
    return out


def _paper_k(c, gamma=2, b=1):
    t = int(abs((math.log2(c) + b) / gamma))
    return t if t % 2 else t + 1


def port(spec, *bugs):
    unknown = set(bugs) - set(BUGS)
    assert not unknown, unknown

    def f(x, params, data_format="channels_last"):
        x = np.asarray(x, dtype=np.float64)
        p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        cf = data_format == "channels_first" and "nhwc_always" not in bugs
        if cf:
            x = x.transpose(0, 2, 3, 1)
        y = _KINDS[spec.kind](spec, p, x, bugs)
        return y.transpose(0, 3, 1, 2) if cf else y
    f.__name__ = f"{spec.kind}_port_{'_'.join(bugs) or 'correct'}"
    return f


def _pool(x, bugs):
    return x.sum(axis=(1, 2)) if "sum_pool" in bugs else x.mean(axis=(1, 2))


def _se(spec, p, x, bugs):
    act = ACTS["gelu_tanh" if "gelu_tanh" in bugs and spec.activation == "gelu" else spec.activation]
    h = act(_dense(_pool(x, bugs), p["fc1.weight"], p.get("fc1.bias"), bugs))
    z = _dense(h, p["fc2.weight"], p.get("fc2.bias"), bugs)
    return x * _gate(spec.gate, bugs)(z)[:, None, None, :]


def _eca(spec, p, x, bugs):
    w = p["conv.weight"].reshape(-1)
    c = x.shape[-1]
    if "timm_kernel" in bugs:
        assert len(w) == max(_paper_k(c), 3), "weights do not fit this port's kernel size"
    if "parity_down" in bugs:
        t = int(abs((math.log2(c) + 1) / 2))
        assert len(w) == (t if t % 2 else max(t - 1, 1)), "weights do not fit this port's kernel size"
    s = _pool(x, bugs)
    if "centre_tap" in bugs:
        # the pooled vector as [N, 1, C]: a sequence of length 1 with C features, zero 'same' padding
        seq = s[:, None, :]
        pad = len(w) // 2
        padded = np.pad(seq, ((0, 0), (pad, pad), (0, 0)))
        z = sum(w[t] * padded[:, t:t + 1, :] for t in range(len(w)))[:, 0, :]
    else:
        z = _conv1d_channels(s, w, spec.padding_mode, bugs)
    return x * _gate("sigmoid", bugs)(z)[:, None, None, :]


def _cbam(spec, p, x, bugs):
    gate = _gate(spec.gate, bugs)

    def mlp(v):
        return _dense(np.maximum(_dense(v, p["fc1.weight"], p.get("fc1.bias"), bugs), 0.0), p["fc2.weight"],
                      p.get("fc2.bias"), bugs)

    x1 = x * gate(mlp(_pool(x, bugs)) + mlp(x.max(axis=(1, 2))))[:, None, None, :]
    stats = {"max": x1.max(axis=-1), "mean": x1.mean(axis=-1)}
    order = spec.spatial_order[::-1] if "order_swapped" in bugs else spec.spatial_order
    maps = np.stack([stats[o] for o in order], axis=1)  # [N, 2, H, W]
    w = p["conv.weight"][0]  # [2, k, k]
    if "convolve" in bugs:
        w = w[:, ::-1, ::-1]
    k = w.shape[-1]
    pad = k // 2
    padded = np.pad(maps, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _, h, wd = maps.shape
    z = np.zeros((n, h, wd))
    for i in range(k):
        for j in range(k):
            z += np.einsum("nchw,c->nhw", padded[:, :, i:i + h, j:j + wd], w[:, i, j])
    if spec.spatial_norm:
        eps = 1e-3 if "eps_1e-3" in bugs else spec.bn_eps
        z = (z - p["bn.running_mean"]) / np.sqrt(p["bn.running_var"] + eps) * p["bn.weight"] + p["bn.bias"]
    return x1 * gate(z)[..., None]


_KINDS = {"se": _se, "eca": _eca, "cbam": _cbam}


def _gate_of(p, x):
    """A correct SE (ReLU, sigmoid) gate [N, 1, 1, C] for channels-last ``x``."""
    h = np.maximum(np.einsum("ni,oi->no", x.mean(axis=(1, 2)), p["fc1.weight"]) + p["fc1.bias"], 0.0)
    return _sigmoid(np.einsum("ni,oi->no", h, p["fc2.weight"]) + p["fc2.bias"])[:, None, None, :]


def _imul(x, p):
    x *= _gate_of(p, x)
    return x


def _multiply_out(x, p):
    np.multiply(x, _gate_of(p, x), out=x)
    return x


def _setitem(x, p):
    x[...] = x * _gate_of(p, x)
    return x


def _zero_after(x, p):  # computes the right output, then wipes its input: only the output counts
    y = x * _gate_of(p, x)
    x[...] = 0.0
    return y


def _zeroed(x, p):  # destroys its input and returns it
    x[...] = 0.0
    return x


def _fill(x, p):
    x.fill(0.0)
    return x


def _abs_first(x, p):  # rectifies its input in place, then gates what is left
    np.abs(x, out=x)
    return x * _gate_of(p, x)


def _params_zeroed(x, p):  # wipes the weights it was given, then computes with them
    p["fc1.weight"][...] = 0.0
    p["fc2.weight"][...] = 0.0
    return x * _gate_of(p, x)


# SE(C) ports f(x, params) on channels-last float64: correct in place, or destroying what they were given
IN_PLACE = {"imul": _imul, "multiply_out": _multiply_out, "setitem": _setitem, "zero_after": _zero_after}
DESTROYING = {"zeroed": _zeroed, "fill": _fill, "abs_first": _abs_first, "params_zeroed": _params_zeroed}
