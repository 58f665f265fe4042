"""What one bench case runs: a callable that does one forward and blocks until its result exists.

``RUNNERS[target](spec, x, mode, layout)`` returns ``(fn, memory)``: ``fn()`` runs one forward; ``memory(fn)``
returns ``(bytes or None, how it was measured)``. Our backends (``_our_runner``) build through
their adapters, the peers (``_timm_runner``, ``_torchvision_runner``, ``_keras_runner``) through their own
libraries; both are called through the framework's adapter (``_timed_call``), so that ours and a peer of
the same framework run the same call, compile and wait.
A runner raises ``Unavailable`` for a case this installation cannot run (the case is left out and the run
says why), any other exception for a case that fails.
"""
from __future__ import annotations

import numpy as np

from .. import quiet

TF_NO_MEMORY = "not measured: tf.config.experimental.get_memory_info('CPU:0') reports 0: TF tracks no CPU allocations"


class Unavailable(Exception):
    """This installation cannot run the case (e.g. a torch_impl without ``fast_inference``)."""


# ------------------------------------------------------------------------------------------ shared

def _torch_memory(fn):
    """Peak extra bytes the CPU allocator held during one call, from torch.profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with quiet.filtered_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    level = peak = 0
    for e in events:
        level += e.nbytes()
        peak = max(peak, level)
    return peak, ("torch.profiler(profile_memory=True) allocation events: peak of their running sum over one call "
                  "(the output included)")


def _no_memory(why):
    return lambda fn: (None, why)


def _torch_input(x, layout):
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return xt.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else xt


def _jax_memory(module, t):
    """XLA's memory plan of the jitted call: temporaries + output."""
    import jax
    from flax import nnx

    graphdef, state = nnx.split(module)

    def memory(_fn):
        m = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v)).lower(state, t).compile().memory_analysis()
        if m is None:
            return None, "not available: memory_analysis() returned None"
        return (int(m.temp_size_in_bytes + m.output_size_in_bytes),
                "jax.jit(f).lower(x).compile().memory_analysis(): temp + output bytes")
    return memory


def _timed_call(framework, module, x, mode, layout):
    """``(fn, memory)`` for ``module`` of ``framework`` ("torch", "tf", "jax"; ours or a peer), called through
    that framework's adapter (`attnport.backends.adapter`): ``eager`` is `Adapter.eager` (the plain call, op
    by op: ``module(x)`` under ``torch.inference_mode()``, ``layer(x, training=False)``, the NNX module),
    ``compiled`` `Adapter.compile` (``torch.compile(fullgraph=True)``, ``tf.function(jit_compile=True)``,
    ``jax.jit``), ``fast_inference`` torch_impl's opt-in method under ``torch.inference_mode()``; each call
    waits for its result (`Adapter.wait`). torch runs NCHW or ``channels_last`` (the module converted too),
    TF and JAX NHWC."""
    from attnport import backends

    adapter = backends.adapter(framework)
    if framework == "torch":
        import torch

        t = _torch_input(x, layout)
        if layout == "channels_last":
            module = module.to(memory_format=torch.channels_last)
    else:
        t = adapter.to_tensor(x)
    if mode == "fast_inference":
        import torch

        def f(v):
            with torch.inference_mode():
                return module.fast_inference(v)
    else:
        f = adapter.compile(module) if mode == "compiled" else adapter.eager(module)
    if framework == "torch":
        memory = _torch_memory
    elif framework == "jax":
        memory = (_jax_memory(module, t) if mode == "compiled"
                  else _no_memory("not measured: op-by-op dispatch has no memory analysis"))
    else:
        memory = _no_memory(TF_NO_MEMORY)
    return (lambda: adapter.wait(f(t))), memory


# ------------------------------------------------------------------------------------------ our backends

def _our_runner(name):
    """The runner of attnport's own backend ``name``: built by its adapter, called by `_timed_call`."""
    def runner(spec, x, mode, layout):
        from attnport import backends

        module = backends.adapter(name).build(spec, seed=0)
        if mode == "fast_inference" and not hasattr(module, "fast_inference"):
            raise Unavailable(f"{type(module).__name__} has no fast_inference in this torch_impl")
        return _timed_call(name, module, x, mode, layout)
    return runner


# ------------------------------------------------------------------------------------------ peers

def _timm_runner(spec, x, mode, layout):
    """timm's ``SEModule``, ``EcaModule``, ``CbamModule`` (timm/layers/squeeze_excite.py, eca.py, cbam.py)."""
    from timm.layers import EcaModule, SEModule
    from timm.layers.cbam import CbamModule

    c = spec.channels
    if spec.kind == "se":
        module = SEModule(c, rd_channels=spec.reduced_channels)
    elif spec.kind == "eca":
        module = EcaModule(c, kernel_size=spec.kernel_size)
    else:
        module = CbamModule(c, rd_channels=spec.reduced_channels, spatial_kernel_size=spec.spatial_kernel)
    return _timed_call("torch", module.eval(), x, mode, layout)


def _torchvision_runner(spec, x, mode, layout):
    """torchvision's ``SqueezeExcitation`` (torchvision/ops/misc.py)."""
    from torchvision.ops import SqueezeExcitation

    module = SqueezeExcitation(spec.channels, spec.reduced_channels).eval()
    return _timed_call("torch", module, x, mode, layout)


def _keras_se(spec, shape):
    """An SE block written as keras.applications writes it (keras/src/applications/efficientnet.py): global
    average pool, reshape, 1x1 conv relu, 1x1 conv sigmoid, multiply."""
    import keras

    n, h, w, c = shape
    inputs = keras.Input((h, w, c))
    se = keras.layers.GlobalAveragePooling2D()(inputs)
    se = keras.layers.Reshape((1, 1, c))(se)
    se = keras.layers.Conv2D(spec.reduced_channels, 1, activation="relu")(se)
    se = keras.layers.Conv2D(c, 1, activation="sigmoid")(se)
    return keras.Model(inputs, keras.layers.multiply([inputs, se]))


def _keras_runner(spec, x, mode, layout):
    return _timed_call("tf", _keras_se(spec, x.shape), x, mode, layout)


RUNNERS = {"torch": _our_runner("torch"), "tf": _our_runner("tf"), "jax": _our_runner("jax"),
           "timm": _timm_runner, "torchvision": _torchvision_runner, "keras": _keras_runner}
