"""MLP adapter: C = Adapter(H) (§3.1, App. A) maps Feature Query States to the expert's width."""

from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """states [B, n, in_dim] -> condition C [B, n, out_dim]."""
        return self.net(states)
