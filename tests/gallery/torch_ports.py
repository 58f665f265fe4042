"""torch ports: ECA with ``nn.Conv1d``'s default ``bias=True`` (the most common ECA bug), SE ports that
gate their input in place, and SE ports with a variable the spec does not have."""
import torch
from torch import nn


class BiasedECA(nn.Module):
    def __init__(self, k: int, bias: float = 0.3):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2)  # bug: bias=True by default
        with torch.no_grad():
            self.conv.bias.fill_(bias)

    def forward(self, x):  # [N, C, H, W]
        s = x.mean(dim=(2, 3))[:, None, :]  # [N, 1, C]
        return x * torch.sigmoid(self.conv(s))[:, 0, :, None, None]


def _mul_(x, g):
    return x.mul_(g)


def _imul(x, g):
    x *= g
    return x


def _mul_out(x, g):
    torch.mul(x, g, out=x)
    return x


def _zero_(x, g):  # destroys its input and returns it
    return x.zero_()


def _setitem_zero(x, g):
    x[...] = 0
    return x


# how each port combines the input x with the gate g: correct in place, or destroying its input
IN_PLACE = {"mul_": _mul_, "imul": _imul, "mul_out": _mul_out}
DESTROYING = {"zero_": _zero_, "setitem_zero": _setitem_zero, "relu_first": torch.mul}
RECTIFIES_FIRST = {"relu_first"}  # rectifies its input in place (torch.relu_) before the SE


class GateSE(nn.Module):
    """SE (ReLU, sigmoid) whose last step is ``combine(x, gate)``; ``extra`` adds a variable;
    ``rectify_first`` runs ``torch.relu_`` on the input first."""

    def __init__(self, channels: int, reduced: int, combine=torch.mul, extra: str | None = None,
                 rectify_first: bool = False):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(channels, reduced), nn.Linear(reduced, channels)
        self.combine, self.extra, self.rectify_first = combine, extra, rectify_first
        if extra == "temperature":  # bug: a learnable temperature the spec does not have
            self.temperature = nn.Parameter(torch.ones(()))
        elif extra == "buffer":  # harmless: a buffer forward never reads
            self.register_buffer("running_gate", torch.zeros(3))

    def forward(self, x):  # [N, C, H, W]
        if self.rectify_first:
            torch.relu_(x)
        z = self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3)))))
        if self.extra == "temperature":
            z = z / self.temperature
        return self.combine(x, torch.sigmoid(z)[:, :, None, None])
