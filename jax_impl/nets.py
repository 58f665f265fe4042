"""Whole ResNet-family networks as Flax NNX modules, built from a `reference.nets.ResNet` spec.

The module tree mirrors timm's `ResNet` (timm/models/resnet.py) so every state path is the flax native
name of a canonical parameter (`reference.native(info, "flax")`): ``conv1.kernel`` (or the deep stem
``conv1.0`` conv, ``conv1.1`` BN, ``conv1.3``, ``conv1.4``, ``conv1.6``, an `nnx.List` whose indices 2
and 5 are stateless `ReLU` placeholders), ``bn1``, ``layer1.0.conv1.kernel`` ... (each stage an
`nnx.List` of blocks), ``layer1.0.se.fc1.kernel`` (the attention block, `SEBlock` / `ECABlock` /
`CBAMBlock`), ``layer2.0.downsample.0`` conv and ``.1`` BN (or, with ``avg_down``, ``.0`` the pool,
``.1`` conv, ``.2`` BN), ``fc``. Computes in [N, H, W, C]; float64 needs ``jax.enable_x64`` (the
adapter's `jax_impl.x64_scope`) while building and calling.

Exactness rules (the oracle's, reference/nets/layers.py): every convolution pads explicitly and symmetrically
(never 'SAME', which pads a stride-2 conv on one side only), the stem max-pool pads with ``-inf``, the
``avg_down`` pool is torch's ``AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)``.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import reference
from reference.nets.layers import ceil_pool_size

from .cbam import CBAMBlock
from .eca import ECABlock
from .se import SEBlock
from .validate import accumulation_dtype, check_array

ATTENTION = {"se": SEBlock, "eca": ECABlock, "cbam": CBAMBlock}
TORCH_BN_MOMENTUM = reference.nets.BN_MOMENTUM  # torch convention (reference/nets/layers.py)


class ReLU(nnx.Module):
    """Stateless ReLU: fills torch's ``nn.ReLU`` slots (indices 2 and 5) of the deep stem."""

    def __call__(self, x):
        return jax.nn.relu(x)


class AvgDown(nnx.Module):
    """torch ``AvgPool2d(k, s, ceil_mode=True, count_include_pad=False)`` on [N, H, W, C]; identity when
    ``stride == 1`` (timm's ``downsample_avg``). A window cut by the bottom/right edge averages only
    the elements inside it: a zero-padded window sum divided by the count of real elements."""

    def __init__(self, stride: int, kernel: int = 2):
        self.stride, self.kernel = stride, kernel

    def __call__(self, x):
        if self.stride == 1:
            return x
        k, s = self.kernel, self.stride
        _, h, w, _ = x.shape
        ho, wo = ceil_pool_size(h, k, s), ceil_pool_size(w, k, s)
        pad = ((0, 0), (0, max(0, (ho - 1) * s + k - h)), (0, max(0, (wo - 1) * s + k - w)), (0, 0))
        window, strides = (1, k, k, 1), (1, s, s, 1)
        total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)  # zeros added in the padding
        ones = np.pad(np.ones((1, h, w, 1)), pad)  # static shape: the counts are a constant
        counts = np.lib.stride_tricks.sliding_window_view(ones, (k, k), axis=(1, 2))[:, ::s, ::s].sum(axis=(-2, -1))
        return total / jnp.asarray(counts, dtype=x.dtype)


def max_pool(x, kernel: int = 3, stride: int = 2, padding: int = 1):
    """torch ``MaxPool2d(kernel, stride, padding)`` on [N, H, W, C]: the padding is ``-inf``, never zero."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    # a Python scalar init: lax recognizes a max-reduction with identity -inf and gives it a gradient
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, kernel, kernel, 1), (1, stride, stride, 1), pad)


def _conv(cin, cout, k, stride=1, groups=1, **common):
    p = (k - 1) // 2  # torch's padding for an odd kernel, explicit on both sides
    return nnx.Conv(cin, cout, kernel_size=(k, k), strides=(stride, stride), padding=((p, p), (p, p)),
                    feature_group_count=groups, use_bias=False, **common)


def _bn(c, eps, param_dtype, **common):
    bn = nnx.BatchNorm(c, epsilon=eps, momentum=reference.bn_momentum(TORCH_BN_MOMENTUM, "flax"),
                       use_running_average=True, param_dtype=param_dtype, **common)
    # nnx.BatchNorm keeps running statistics in float32 whatever param_dtype is; store them in param_dtype
    # so a float64 module does not round loaded running_mean/var.
    bn.mean = nnx.BatchStat(bn.mean[...].astype(param_dtype))
    bn.var = nnx.BatchStat(bn.var[...].astype(param_dtype))
    return bn


def attention_block(spec, param_dtype, rngs):
    """The existing NNX block (`SEBlock`, `ECABlock`, `CBAMBlock`) for a reference attention ``spec``."""
    fields = {k: getattr(spec, k) for k in spec.__dataclass_fields__}
    block = ATTENTION[spec.kind](**fields, param_dtype=param_dtype, rngs=rngs)
    if block.spec != spec:
        raise ValueError(f"{type(block).__name__} built {block.spec} for attention spec {spec}")
    return block


class ResidualBlock(nnx.Module):
    """timm's ``BasicBlock`` (conv1 3x3 s, conv2 3x3) or ``Bottleneck`` (conv1 1x1, conv2 3x3 s groups,
    conv3 1x1), each conv followed by BN, attention ``se`` after the last BN, then ``+ shortcut`` and ReLU.
    ``downsample``: None, [conv 1x1 s, BN] or [`AvgDown`, conv 1x1, BN]."""

    def __init__(self, b: reference.nets.Block, eps: float, *, param_dtype, rngs: nnx.Rngs):
        c = dict(param_dtype=param_dtype, rngs=rngs)
        self.kind = b.kind
        if b.kind == "basic":
            self.conv1, self.bn1 = _conv(b.in_channels, b.width, 3, b.stride, **c), _bn(b.width, eps, **c)
            self.conv2, self.bn2 = _conv(b.width, b.out_channels, 3, **c), _bn(b.out_channels, eps, **c)
        else:
            self.conv1, self.bn1 = _conv(b.in_channels, b.width, 1, **c), _bn(b.width, eps, **c)
            self.conv2, self.bn2 = _conv(b.width, b.width, 3, b.stride, b.groups, **c), _bn(b.width, eps, **c)
            self.conv3, self.bn3 = _conv(b.width, b.out_channels, 1, **c), _bn(b.out_channels, eps, **c)
        self.se = None if b.attention is None else attention_block(b.attention, param_dtype, rngs)
        down = None  # assigned once: NNX fixes an attribute as static or data on its first assignment
        if b.downsample == "conv":
            down = nnx.List([_conv(b.in_channels, b.out_channels, 1, b.stride, **c), _bn(b.out_channels, eps, **c)])
        elif b.downsample == "avg":
            down = nnx.List([AvgDown(b.stride), _conv(b.in_channels, b.out_channels, 1, **c),
                             _bn(b.out_channels, eps, **c)])
        self.downsample = down

    def __call__(self, x):
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        if self.kind == "basic":
            y = self.bn2(self.conv2(y))
        else:
            y = self.bn3(self.conv3(jax.nn.relu(self.bn2(self.conv2(y)))))
        if self.se is not None:
            y = self.se(y)
        shortcut = x
        if self.downsample is not None:
            for layer in self.downsample:
                shortcut = layer(shortcut)
        return jax.nn.relu(y + shortcut)


def check_param_dtype(param_dtype) -> None:
    """Refuse a dtype JAX would silently narrow (float64 outside ``jax.enable_x64``)."""
    if jnp.dtype(param_dtype) != jax.dtypes.canonicalize_dtype(param_dtype):
        raise ValueError(f"param_dtype={jnp.dtype(param_dtype).name} needs 64-bit JAX: build inside "
                         f"jax.enable_x64(True) (jax_impl.x64_scope), or it would silently be "
                         f"{jax.dtypes.canonicalize_dtype(param_dtype).name}")


class ResNet(nnx.Module):
    """A `reference.nets.ResNet` spec as an NNX module: [N, H, W, in_chans] -> logits [N, num_classes].

    ``ResNet(spec, param_dtype=jnp.float32, rngs=nnx.Rngs(0))``; ``.spec`` is the spec. Built in
    inference mode (BatchNorm on running statistics, `nnx.BatchStat`; everything else `nnx.Param`).
    Weights: convs [kh, kw, in / groups, out] with no bias, BN ``scale``/``bias``/``mean``/``var``,
    ``fc`` Linear(num_features -> num_classes) kernel [features, classes]. Parameters are Flax's own
    initialization; load canonical ones with `jax_impl.load_params` or `load_safetensors`.
    """

    def __init__(self, spec: reference.nets.ResNet, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if not isinstance(spec, reference.nets.ResNet):
            raise TypeError(f"ResNet needs a reference.nets.ResNet spec, got {type(spec).__name__}")
        check_param_dtype(param_dtype)
        self.spec = spec
        eps = spec.bn_eps
        c = dict(param_dtype=param_dtype, rngs=rngs)
        widths = spec.stem_channels
        if spec.stem_type == "":
            self.conv1 = _conv(spec.in_chans, widths[0], 7, 2, **c)
        else:
            c0, c1, c2 = widths
            self.conv1 = nnx.List([_conv(spec.in_chans, c0, 3, 2, **c), _bn(c0, eps, **c), ReLU(),
                                   _conv(c0, c1, 3, **c), _bn(c1, eps, **c), ReLU(),
                                   _conv(c1, c2, 3, **c)])
        self.bn1 = _bn(widths[-1], eps, **c)
        stages: dict[str, list] = {}
        for b in spec.blocks():
            stages.setdefault(b.path.split(".")[0], []).append(ResidualBlock(b, eps, **c))
        for name, blocks in stages.items():
            setattr(self, name, nnx.List(blocks))
        self.stage_names = tuple(stages)
        self.fc = nnx.Linear(spec.num_features, spec.num_classes, **c)

    def stem(self, x):
        """conv1 (7x7 s2, or the deep stem), bn1, ReLU, 3x3 s2 max-pool padded with -inf."""
        if isinstance(self.conv1, nnx.List):
            for layer in self.conv1:
                x = layer(x)
        else:
            x = self.conv1(x)
        return max_pool(jax.nn.relu(self.bn1(x)))

    def features(self, x):
        """[N, H, W, in_chans] -> the last stage's output [N, H / 32, W / 32, num_features]."""
        x = self.stem(x)
        for name in self.stage_names:
            for block in getattr(self, name):
                x = block(x)
        return x

    def __call__(self, x):
        check_array(self.spec, x)
        f = self.features(x)
        return self.fc(jnp.mean(f, axis=(1, 2), dtype=accumulation_dtype(f)).astype(f.dtype))


def load_safetensors(model: ResNet, path) -> ResNet:
    """Restore ``model`` in place from a safetensors file keyed by flax native paths, i.e. the file
    ``safetensors.numpy.save_file(reference.to_native(spec, params, "flax"), path)`` writes
    (``layer1.0.conv1.kernel`` [kh, kw, in, out], ``bn1.mean``, ...). Returns ``model``.

    ``model`` may be abstract (``nnx.eval_shape(lambda: ResNet(spec, rngs=nnx.Rngs(0)))``, Flax's
    restore idiom, which runs no initializer). The file's names must be exactly the model's state paths,
    each tensor the variable's shape and a dtype that casts to it losslessly; otherwise
    `reference.ParamError` names the offending keys and nothing is changed. The restore itself is
    ``nnx.update(model, state)`` with a state built from the file.
    """
    from safetensors.numpy import load_file

    arrays = load_file(str(path))
    flat = dict(nnx.to_flat_state(nnx.state(model)))
    names = {".".join(map(str, key)): key for key in flat}
    want = {n: flat[key].get_value() for n, key in names.items()}  # arrays or jax.ShapeDtypeStruct
    mismatched = {n: (tuple(want[n].shape), arrays[n].shape) for n in set(names) & set(arrays)
                  if tuple(want[n].shape) != arrays[n].shape}
    if set(names) ^ set(arrays) or mismatched:
        raise reference.ParamError(missing=set(names) - set(arrays), unexpected=set(arrays) - set(names),
                                   mismatched=mismatched, context=f"the state of {type(model).__name__} "
                                                                  f"{model.spec.name!r} (file {path})")
    for n in names:
        reference.check_castable({n: arrays[n]}, np.dtype(want[n].dtype))
    x64 = any(np.dtype(w.dtype) == np.float64 for w in want.values())
    with jax.enable_x64(True) if x64 else contextlib.nullcontext():
        state = {key: flat[key].replace(jax.device_put(arrays[n].astype(want[n].dtype))) for n, key in names.items()}
        nnx.update(model, nnx.from_flat_state(state))
    return model
