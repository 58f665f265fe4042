"""A torch ECA port with the most common ECA bug: ``nn.Conv1d``'s default ``bias=True``."""
import torch
from torch import nn


class BiasedECA(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2)  # bug: bias=True by default
        with torch.no_grad():
            self.conv.bias.fill_(0.3)

    def forward(self, x):  # [N, C, H, W]
        s = x.mean(dim=(2, 3))[:, None, :]  # [N, 1, C]
        return x * torch.sigmoid(self.conv(s))[:, 0, :, None, None]
