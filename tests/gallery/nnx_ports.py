"""A Flax NNX SE port that sums where SE averages (``jnp.sum`` for ``jnp.mean``)."""
import jax.numpy as jnp
from flax import nnx


class SumPoolSE(nnx.Module):
    def __init__(self, channels: int, reduced: int, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(channels, reduced, rngs=rngs)
        self.fc2 = nnx.Linear(reduced, channels, rngs=rngs)

    def __call__(self, x):  # [N, H, W, C]
        s = jnp.sum(x, axis=(1, 2))  # bug: should be jnp.mean
        return x * nnx.sigmoid(self.fc2(nnx.relu(self.fc1(s))))[:, None, None, :]
