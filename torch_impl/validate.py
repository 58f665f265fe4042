"""Input checks for torch modules, delegating every rule to `reference.check_input`."""
import torch

import reference


def check_tensor(spec, x: torch.Tensor) -> None:
    """[N, C, H, W], spec.channels channels, non-empty H and W, floating dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{spec.kind} expects a torch.Tensor, got {type(x).__name__}")
    reference.check_input(spec, tuple(x.shape), str(x.dtype), x.is_floating_point(), "channels_first")
