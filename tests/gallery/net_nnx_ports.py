"""Flax NNX whole-network ports of small `reference.nets.ResNet` specs, written by hand as a user would port
timm's ResNet (timm/models/resnet.py: `BasicBlock`, `downsample_avg`, `ResNet`) -- not `jax_impl.nets` --
with one ``bug=`` each, for `attnport.verify` to find at the right layer (attnport/netverify.py).

The attribute names follow timm's state dict (``conv1``, ``bn1``, ``layer1`` an `nnx.List` of blocks, a
block's ``conv1``/``bn1``/``conv2``/``bn2``/``se``/``downsample``, ``fc``), so the NNX graph paths are
the stage names (``layer2.0``) and verify maps the weights by name.

Bugs (``BUGS``):

- ``"avg_down_count_include_pad"``: the avg_down shortcut pool padded to ceil size where the input is odd, as
  a port of torch's ``AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)`` would, but with
  `nnx.avg_pool`'s default ``count_include_pad=True``: a window cut by the edge is divided by 4.
- ``"residual_before_attention"``: every block adds the shortcut before the SE: ``relu(se(y + shortcut))``.
- ``"bn_momentum"``: every ``nnx.BatchNorm`` built with ``momentum=0.1``, torch's number in Flax's convention
  (Flax's ``running = m * running + (1 - m) * batch``: it should be 0.9). Inference is exact.
- ``"classifier_transposed"``: the port itself is correct; `load_classifier_reshaped` is a loader that
  writes ``fc.kernel`` as ``w.reshape(in, out)`` of torch's ``[out, in]`` ``fc.weight`` instead of ``w.T``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jax_impl
import reference

BUGS = (None, "avg_down_count_include_pad", "residual_before_attention", "bn_momentum", "classifier_transposed")

# seresnet18 with one block per stage (torch-style stem, 1x1-conv shortcuts)
SE_SPEC = reference.nets.ResNet("basic", (1, 1, 1, 1), attention="se", num_classes=10, name="seresnet10")
# a narrow deep stem ('d' variant) with avg_down shortcuts and ECA
AVG_DOWN_SPEC = reference.nets.ResNet("basic", (1, 1, 1, 1), stem_type="deep", stem_width=16, avg_down=True,
                                      attention="eca", num_classes=10, name="ecaresnet10d_narrow")

ATTENTION = {"se": jax_impl.SEBlock, "eca": jax_impl.ECABlock}


class Relu(nnx.Module):
    """A stateless ReLU in the deep stem's ``nn.ReLU`` slots (``conv1.2``, ``conv1.5``)."""

    def __call__(self, x):
        return nnx.relu(x)


def _conv(cin, cout, k, stride, dtype, rngs):
    p = k // 2  # torch's padding=k // 2 on both sides (Flax's 'SAME' puts a stride-2 conv's extra zero
    # right/bottom on even sizes)
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=((p, p), (p, p)), use_bias=False,
                    param_dtype=dtype, rngs=rngs)


def _bn(c, eps, momentum, dtype, rngs):
    bn = nnx.BatchNorm(c, epsilon=eps, momentum=momentum, use_running_average=True, param_dtype=dtype, rngs=rngs)
    # nnx.BatchNorm creates its running statistics in float32 whatever param_dtype is (flax/nnx/nn/normalization.py)
    bn.mean = nnx.BatchStat(jnp.zeros((c,), dtype))
    bn.var = nnx.BatchStat(jnp.ones((c,), dtype))
    return bn


class ShortcutPool(nnx.Module):
    """timm's ``downsample_avg`` pool: ``AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)``, identity
    at stride 1. ceil_mode: a zero row/column padded where the size is odd, not counted in the mean."""

    def __init__(self, stride: int, count_include_pad: bool):
        self.stride, self.count_include_pad = stride, count_include_pad

    def __call__(self, x):
        if self.stride == 1:
            return x
        h, w = x.shape[1:3]
        return nnx.avg_pool(x, (2, 2), (2, 2), padding=((0, h % 2), (0, w % 2)),
                            count_include_pad=self.count_include_pad)


class BasicBlock(nnx.Module):
    def __init__(self, b: reference.nets.Block, eps: float, momentum: float, bug, *, dtype, rngs: nnx.Rngs):
        if b.kind != "basic" or b.attention is None or b.attention.kind not in ATTENTION:
            raise ValueError(f"this port has basic blocks with SE or ECA only, got {b}")
        self.conv1 = _conv(b.in_channels, b.width, 3, b.stride, dtype, rngs)
        self.bn1 = _bn(b.width, eps, momentum, dtype, rngs)
        self.conv2 = _conv(b.width, b.out_channels, 3, 1, dtype, rngs)
        self.bn2 = _bn(b.out_channels, eps, momentum, dtype, rngs)
        fields = {k: getattr(b.attention, k) for k in b.attention.__dataclass_fields__}
        self.se = ATTENTION[b.attention.kind](**fields, param_dtype=dtype, rngs=rngs)
        down = None
        if b.downsample == "conv":
            down = nnx.List([_conv(b.in_channels, b.out_channels, 1, b.stride, dtype, rngs),
                             _bn(b.out_channels, eps, momentum, dtype, rngs)])
        elif b.downsample == "avg":
            down = nnx.List([ShortcutPool(b.stride, count_include_pad=bug == "avg_down_count_include_pad"),
                             _conv(b.in_channels, b.out_channels, 1, 1, dtype, rngs),
                             _bn(b.out_channels, eps, momentum, dtype, rngs)])
        self.downsample = down
        self.residual_first = bug == "residual_before_attention"

    def __call__(self, x):
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x
        if self.downsample is not None:
            for layer in self.downsample:
                shortcut = layer(shortcut)
        if self.residual_first:
            return nnx.relu(self.se(y + shortcut))
        return nnx.relu(self.se(y) + shortcut)


class ResNetPort(nnx.Module):
    """A basic-block `reference.nets.ResNet` spec with SE or ECA, [N, H, W, C] -> logits, with ``bug``."""

    def __init__(self, spec: reference.nets.ResNet, bug=None, *, dtype=jnp.float64, rngs: nnx.Rngs):
        if bug not in BUGS:
            raise ValueError(f"bug must be one of {BUGS}, got {bug!r}")
        eps = spec.bn_eps
        momentum = 0.1 if bug == "bn_momentum" else 0.9  # Flax's convention: 1 - torch's 0.1
        c = dict(dtype=dtype, rngs=rngs)
        if spec.stem_type == "":
            self.conv1 = _conv(spec.in_chans, 64, 7, 2, **c)
        else:
            c0, c1, c2 = spec.stem_channels
            self.conv1 = nnx.List([_conv(spec.in_chans, c0, 3, 2, **c), _bn(c0, eps, momentum, **c), Relu(),
                                   _conv(c0, c1, 3, 1, **c), _bn(c1, eps, momentum, **c), Relu(),
                                   _conv(c1, c2, 3, 1, **c)])
        self.bn1 = _bn(spec.stem_channels[-1], eps, momentum, **c)
        blocks = spec.blocks()
        stage = lambda i: nnx.List([BasicBlock(b, eps, momentum, bug, **c)  # noqa: E731
                                    for b in blocks if b.path.startswith(f"layer{i}.")])
        self.layer1, self.layer2, self.layer3, self.layer4 = stage(1), stage(2), stage(3), stage(4)
        self.fc = nnx.Linear(spec.num_features, spec.num_classes, param_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        if isinstance(self.conv1, nnx.List):
            for layer in self.conv1:
                x = layer(x)
        else:
            x = self.conv1(x)
        x = nnx.relu(self.bn1(x))
        x = nnx.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))  # reduce_window pads with -inf
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x)
        return self.fc(jnp.mean(x, axis=(1, 2)))


def build(spec, bug=None) -> ResNetPort:
    """A float64 `ResNetPort` with zero weights (verify loads its own): built abstractly with
    ``nnx.eval_shape`` so no initializer compiles."""
    with jax.enable_x64(True):
        graphdef, state = nnx.split(nnx.eval_shape(lambda: ResNetPort(spec, bug, rngs=nnx.Rngs(0))))
        return nnx.merge(graphdef, jax.tree.map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype)), state))


def _node(model, path: str):
    node = model
    for key in path.split("."):
        node = node[int(key)] if key.isdigit() else getattr(node, key)
    return node


BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def load(model, params, *, fc_reshaped: bool = False) -> None:
    """A user's loader: timm state-dict names and torch axis order -> the port's variables. With
    ``fc_reshaped`` the classifier's [out, in] weight is written ``w.reshape(in, out)`` (the bug) where
    ``w.T`` is needed."""
    with jax.enable_x64(True):
        for name, value in params.items():
            path, leaf = name.rsplit(".", 1)
            node, w = _node(model, path), np.asarray(value)
            if isinstance(node, nnx.BatchNorm):
                var, new = getattr(node, BN_NAMES[leaf]), w
            elif leaf == "bias":
                var, new = node.bias, w
            elif isinstance(node, nnx.Conv):  # torch [out, in, *k] -> Flax [*k, in, out]
                var, new = node.kernel, w.transpose(*range(2, w.ndim), 1, 0)
            elif isinstance(node, nnx.Linear):  # torch [out, in] -> Flax [in, out]
                var, new = node.kernel, (w.reshape(w.shape[1], w.shape[0]) if fc_reshaped and path == "fc" else w.T)
            else:
                raise KeyError(f"{name}: no variable for it in {type(model).__name__}")
            if tuple(var.get_value().shape) != new.shape:
                raise ValueError(f"{name}: shape {new.shape} for a variable of shape {tuple(var.get_value().shape)}")
            var.set_value(jax.device_put(np.array(new, dtype=var.get_value().dtype)))


def load_classifier_reshaped(model, params) -> None:
    """The ``"classifier_transposed"`` bug: `load` with ``fc.kernel = fc.weight.reshape(in, out)``."""
    load(model, params, fc_reshaped=True)
