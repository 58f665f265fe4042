"""Flax NNX ports: an SE that sums where SE averages (``jnp.sum`` for ``jnp.mean``), an ECA built with
``nnx.Conv(use_bias=True)``, and an SE holding a variable it never reads."""
import jax.numpy as jnp
from flax import nnx


class SumPoolSE(nnx.Module):
    def __init__(self, channels: int, reduced: int, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(channels, reduced, rngs=rngs)
        self.fc2 = nnx.Linear(reduced, channels, rngs=rngs)

    def __call__(self, x):  # [N, H, W, C]
        s = jnp.sum(x, axis=(1, 2))  # bug: should be jnp.mean
        return x * nnx.sigmoid(self.fc2(nnx.relu(self.fc1(s))))[:, None, None, :]


class BiasECA(nnx.Module):
    def __init__(self, k: int, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 1, (k,), padding="SAME", use_bias=True, rngs=rngs)  # bug: bias (zeros)

    def __call__(self, x):  # [N, H, W, C]
        s = jnp.mean(x, axis=(1, 2))[:, :, None]  # [N, C, 1]
        return x * nnx.sigmoid(self.conv(s))[:, None, None, :, 0]


class UnusedVariableSE(nnx.Module):
    def __init__(self, channels: int, reduced: int, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(channels, reduced, rngs=rngs)
        self.fc2 = nnx.Linear(reduced, channels, rngs=rngs)
        self.ema = nnx.BatchStat(jnp.zeros((3,)))  # kept for training statistics; forward never reads it

    def __call__(self, x):  # [N, H, W, C]
        s = jnp.mean(x, axis=(1, 2))
        return x * nnx.sigmoid(self.fc2(nnx.relu(self.fc1(s))))[:, None, None, :]
