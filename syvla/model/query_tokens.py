"""Feature Query Tokens (§3.1): n learnable embeddings placed at the `<|fq|>` slots
appended after the prompt (and after the chain of thought, when there is one)."""

from __future__ import annotations

import torch
from torch import nn


class FeatureQueryTokens(nn.Module):
    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.embeddings = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)

    @property
    def num_tokens(self) -> int:
        return self.embeddings.shape[0]

    def insert(self, inputs_embeds: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        """Replace the embeddings at query_mask [B, L] (n True per row that has queries) by the learned ones.

        inputs_embeds [B, L, d]. Rows without query slots (VQA samples) are left as they are.
        """
        rows = query_mask.sum(1)
        if not torch.all((rows == 0) | (rows == self.num_tokens)):
            raise ValueError(f"each sequence needs 0 or {self.num_tokens} query slots, got {rows.tolist()}")
        n_rows = int((rows > 0).sum())
        values = self.embeddings.to(inputs_embeds.dtype).unsqueeze(0).expand(n_rows, -1, -1).reshape(-1, inputs_embeds.shape[-1])
        return inputs_embeds.masked_scatter(query_mask.unsqueeze(-1), values)

    @staticmethod
    def gather(hidden: torch.Tensor, query_mask: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """Feature Query States H [B_q, n, d] from hidden [B, L, d] at the query slots (row order kept)."""
        return hidden[query_mask].view(-1, num_tokens, hidden.shape[-1])
