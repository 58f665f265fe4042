"""A tiny classifier around one attention block, written idiomatically in each framework, and a
plain-SGD training loop for each, for `test_training.py`.

Net: 3x3 conv (3 -> C channels, bias, zero 'same' padding, stride 1) -> the attnport block for
``spec`` (training mode) -> global average pool -> dense (C -> CLASSES, bias). Loss: mean softmax
cross-entropy. Update: ``w <- w - lr * dloss/dw`` for every trainable weight, no momentum.

Canonical weights of the whole net: the stem and head in torch's axis order (``stem.weight``
[C, 3, 3, 3], ``stem.bias`` [C], ``head.weight`` [CLASSES, C], ``head.bias`` [CLASSES]), plus the
block's canonical params under ``attn.``. The stem/head layouts come from `reference.layout`
(their kinds are "conv2d", "linear" and "bias", as for the blocks); the block's weights move through
the backend's own ``load_params``/``export_params``. Frameworks are imported only inside the
per-backend functions, so this module imports with NumPy alone.
"""
from __future__ import annotations

import dataclasses

import numpy as np

import reference

IN_CHANNELS = 3
STEM_KERNEL = 3
CLASSES = 5
ATTN = "attn."


class StemHead:
    """The canonical table of the net's own (non-attention) weights, shaped like a spec's, so that
    `reference.to_native`, `reference.from_native` and `reference.layout.init_params` apply to it."""

    def __init__(self, channels: int):
        c, k = channels, STEM_KERNEL
        self._table = (
            reference.ParamInfo("stem.weight", (c, IN_CHANNELS, k, k), "conv2d", "stem conv [out, in, kh, kw]",
                                fan_in=IN_CHANNELS * k * k),
            reference.ParamInfo("stem.bias", (c,), "bias", "stem conv bias", fan_in=IN_CHANNELS * k * k),
            reference.ParamInfo("head.weight", (CLASSES, c), "linear", "classifier [out, in]", fan_in=c),
            reference.ParamInfo("head.bias", (CLASSES,), "bias", "classifier bias", fan_in=c),
        )

    def param_table(self):
        return self._table


def init_params(spec, seed: int = 0, dtype="float32") -> dict[str, np.ndarray]:
    """Canonical weights of the whole net: the block's ``spec.init_params(seed)`` under ``attn.``
    and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) stem/head weights from the reference initializer."""
    np_dtype = reference.numpy_dtype(dtype)
    params = reference.layout.init_params(StemHead(spec.channels), seed=seed + 1000, dtype=np_dtype)
    params.update({ATTN + k: v for k, v in spec.init_params(seed=seed, dtype=np_dtype).items()})
    return params


def split(params):
    """(stem/head params, the block's params without the ``attn.`` prefix)."""
    own = {k: v for k, v in params.items() if not k.startswith(ATTN)}
    return own, {k[len(ATTN):]: v for k, v in params.items() if k.startswith(ATTN)}


def is_trainable(spec, name: str) -> bool:
    """Everything but BatchNorm running statistics (which training updates, but not by SGD)."""
    if not name.startswith(ATTN):
        return True
    kind = {info.name: info.kind for info in spec.param_table()}[name[len(ATTN):]]
    return kind not in ("bn_mean", "bn_var")


@dataclasses.dataclass
class Run:
    """One training run: ``losses[s]`` is the loss at the weights ``params[s]`` (canonical, after s
    updates; ``params[0]`` is the loaded initialization). torch fills ``grads[s]`` (canonical
    d loss / d weight at ``params[s]``) and ``bn_stats[s]`` (``{"running_mean"|"running_var":
    (batch mean | unbiased batch variance of the BN input, its canonical gradient)}``)."""

    losses: list
    params: list
    grads: list | None = None
    bn_stats: list | None = None


def _native_path(path: str, obj):
    for key in path.split("."):
        obj = getattr(obj, key)
    return obj


# --------------------------------------------------------------------------------------------- torch
def train_torch(spec, params, x, labels, lr: float, steps: int, dtype: str) -> Run:
    """Also records, per step, the canonical gradients of the loss and (CBAM with BatchNorm) of the
    BN layer's batch mean and unbiased batch variance: the test's tolerances scale with them."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import torch_impl

    torch_dtype = getattr(torch, dtype)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            c = spec.channels
            self.stem = nn.Conv2d(IN_CHANNELS, c, STEM_KERNEL, padding=STEM_KERNEL // 2, dtype=torch_dtype)
            self.attn = torch_impl.build(spec, dtype=dtype)
            self.head = nn.Linear(c, CLASSES, dtype=torch_dtype)

        def forward(self, v):  # [N, 3, H, W]
            return self.head(self.attn(self.stem(v)).mean(dim=(2, 3)))

    own = StemHead(spec.channels)
    net = Net()
    stem_head, attn = split(params)
    with torch.no_grad():
        for path, value in reference.to_native(own, stem_head, "torch").items():
            _native_path(path, net).copy_(torch.from_numpy(value))
    torch_impl.load_params(net.attn, attn)

    def export():
        native = {path: _native_path(path, net).detach().numpy().copy()
                  for path in reference.to_native(own, stem_head, "torch")}
        out = reference.from_native(own, native, "torch")
        out.update({ATTN + k: v for k, v in torch_impl.export_params(net.attn).items()})
        return out

    bn_inputs = []
    if getattr(net.attn, "bn", None) is not None:
        net.attn.bn.register_forward_pre_hook(lambda module, args: bn_inputs.append(args[0]))

    # torch's native layout is the canonical one, so parameter names are canonical names.
    named = dict(net.named_parameters())

    def canonical_grads(value, retain):
        grads = torch.autograd.grad(value, list(named.values()), retain_graph=retain, allow_unused=True)
        return {name: np.zeros(tuple(p.shape), reference.numpy_dtype(dtype)) if g is None else g.numpy().copy()
                for (name, p), g in zip(named.items(), grads)}

    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.0)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
    yt = torch.from_numpy(labels.astype(np.int64))
    run = Run(losses=[], params=[export()], grads=[], bn_stats=[])
    for _ in range(steps):
        opt.zero_grad()
        bn_inputs.clear()
        loss = F.cross_entropy(net(xt), yt)
        if bn_inputs:
            z, = bn_inputs
            stats = {"running_mean": z.mean(), "running_var": z.var(unbiased=True)}
            run.bn_stats.append({k: (float(v.detach()), canonical_grads(v, retain=True)) for k, v in stats.items()})
        run.grads.append(canonical_grads(loss, retain=True))
        loss.backward()
        opt.step()
        run.losses.append(float(loss.detach()))
        run.params.append(export())
    return run


# ------------------------------------------------------------------------------------- Keras / TF
def train_tf(spec, params, x, labels, lr: float, steps: int, dtype: str) -> Run:
    import keras
    import tensorflow as tf

    import tf_impl

    class Net(keras.Model):
        def __init__(self):
            super().__init__(dtype=dtype)
            c = spec.channels
            self.stem = keras.layers.Conv2D(c, STEM_KERNEL, padding="same", dtype=dtype, name="stem")
            self.stem.build((None, None, None, IN_CHANNELS))
            self.attn = tf_impl.build(spec, dtype=dtype)
            self.pool = keras.layers.GlobalAveragePooling2D(dtype=dtype)
            self.head = keras.layers.Dense(CLASSES, dtype=dtype, name="head")
            self.head.build((None, c))

        def call(self, v, training=None):  # [N, H, W, 3]
            return self.head(self.pool(self.attn(self.stem(v), training=training)))

    own = StemHead(spec.channels)
    net = Net()
    stem_head, attn = split(params)
    for path, value in reference.to_native(own, stem_head, "keras").items():
        _native_path(path, net).assign(value)
    tf_impl.load_params(net.attn, attn)

    def export():
        native = {path: np.array(_native_path(path, net).numpy())
                  for path in reference.to_native(own, stem_head, "keras")}
        out = reference.from_native(own, native, "keras")
        out.update({ATTN + k: v for k, v in tf_impl.export_params(net.attn).items()})
        return out

    xt, yt = tf.constant(x), tf.constant(labels.astype(np.int32))
    run = Run(losses=[], params=[export()])
    for _ in range(steps):
        with tf.GradientTape() as tape:
            logits = net(xt, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yt, logits, from_logits=True))
        variables = net.trainable_variables
        grads = tape.gradient(loss, variables)
        for variable, grad in zip(variables, grads):
            variable.assign_sub(lr * grad)
        run.losses.append(float(loss))
        run.params.append(export())
    return run


# -------------------------------------------------------------------------------------- Flax NNX
def train_jax(spec, params, x, labels, lr: float, steps: int, dtype: str) -> Run:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import jax_impl
    from jax_impl.adapter import x64_scope

    zeros = nnx.initializers.zeros_init()  # overwritten by the canonical weights; needs no RNG compile

    class Net(nnx.Module):
        def __init__(self, rngs):
            c = spec.channels
            self.stem = nnx.Conv(IN_CHANNELS, c, (STEM_KERNEL, STEM_KERNEL), padding="SAME",
                                 param_dtype=jnp.dtype(dtype), kernel_init=zeros, bias_init=zeros, rngs=rngs)
            self.attn = jax_impl.build(spec, dtype=dtype)
            self.head = nnx.Linear(c, CLASSES, param_dtype=jnp.dtype(dtype), kernel_init=zeros, bias_init=zeros,
                                   rngs=rngs)

        def __call__(self, v):  # [N, H, W, 3]
            return self.head(jnp.mean(self.attn(self.stem(v)), axis=(1, 2)))

    def loss_fn(model, v, y):
        return optax.softmax_cross_entropy_with_integer_labels(model(v), y).mean()

    @nnx.jit
    def step(model, v, y):
        loss, grads = nnx.value_and_grad(loss_fn)(model, v, y)  # w.r.t. nnx.Param; BatchStats update in place
        nnx.update(model, jax.tree.map(lambda p, g: p - lr * g, nnx.state(model, nnx.Param), grads))
        return loss

    own = StemHead(spec.channels)
    stem_head, attn = split(params)
    with x64_scope(dtype):
        net = Net(nnx.Rngs(0))
        for path, value in reference.to_native(own, stem_head, "flax").items():
            _native_path(path, net)[...] = jnp.asarray(value)
        jax_impl.load_params(net.attn, attn)

        def export():
            native = {path: np.array(_native_path(path, net)[...])
                      for path in reference.to_native(own, stem_head, "flax")}
            out = reference.from_native(own, native, "flax")
            out.update({ATTN + k: v for k, v in jax_impl.export_params(net.attn).items()})
            return out

        net.train()
        xt, yt = jnp.asarray(x), jnp.asarray(labels.astype(np.int32))
        run = Run(losses=[], params=[export()])
        for _ in range(steps):
            run.losses.append(float(step(net, xt, yt)))
            run.params.append(export())
    return run


TRAINERS = {"torch": train_torch, "tf": train_tf, "jax": train_jax}
