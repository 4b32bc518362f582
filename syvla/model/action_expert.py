"""Action Expert (App. A): a flow-matching transformer.

Input sequence per sample:
  [image tokens of every view (own SigLIP tower), state token, flow-timestep token, chunk action tokens]
Every layer: self-attention over the sequence, cross-attention to the control
condition C = Adapter(H), MLP. Each embodiment (dataset) has its own MLP
encoder/decoder pair for states and actions, since dims differ across robots.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import syvla._compat  # noqa: F401  (torchvision's ops first, however syvla itself was imported)
from syvla.model.config import ActionExpertConfig, EmbodimentConfig


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(kv_dim or width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, W] attends to context [B, S, kv_dim]; key_mask [B, S] True = attend."""
        b, l, w = x.shape
        q = self.q(x).view(b, l, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, l, w))


class ExpertLayer(nn.Module):
    def __init__(self, cfg: ActionExpertConfig):
        super().__init__()
        w = cfg.width
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(w), nn.LayerNorm(w), nn.LayerNorm(w)
        self.self_attn = Attention(w, cfg.num_heads)
        self.cross_attn = Attention(w, cfg.num_heads)
        self.mlp = nn.Sequential(nn.Linear(w, cfg.ff_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ff_dim, w))

    def forward(self, x, key_mask, cond):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, key_mask)
        x = x + self.cross_attn(self.norm2(x), cond)  # every layer follows the VLM's control intention
        return x + self.mlp(self.norm3(x))


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.SiLU(), nn.Linear(h, o))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of flow times t [...] in [0, 1] -> [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class EmbodimentIO(nn.Module):
    """One robot's MLP encoder/decoder pair (state encoder, action encoder, action decoder)."""

    def __init__(self, emb: EmbodimentConfig, width: int):
        super().__init__()
        self.state_dim, self.action_dim = emb.state_dim, emb.action_dim
        self.state_encoder = _mlp(emb.state_dim, width, width)
        self.action_encoder = _mlp(emb.action_dim, width, width)
        self.action_decoder = _mlp(width, width, emb.action_dim)


class ActionExpert(nn.Module):
    def __init__(self, cfg: ActionExpertConfig, embodiments: tuple[EmbodimentConfig, ...], max_views: int):
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        self.cfg = cfg
        v = cfg.vision
        self.vision = SiglipVisionModel(SiglipVisionConfig(
            image_size=v.image_size, patch_size=v.patch_size, hidden_size=v.hidden_size, num_hidden_layers=v.num_layers,
            num_attention_heads=v.num_heads, intermediate_size=v.intermediate_size, vision_use_head=False))
        self.image_proj = nn.Linear(v.hidden_size, cfg.width)
        self.view_embed = nn.Parameter(torch.zeros(max_views, cfg.image_tokens_per_view, cfg.width))
        self.time_mlp = _mlp(cfg.width, cfg.width, cfg.width)
        if cfg.step_times:  # training-time action conditioning: each action token also sees its own step's time
            self.step_time = nn.Linear(cfg.width, cfg.width)
            nn.init.zeros_(self.step_time.weight)  # zero: a checkpoint without it computes the same field
            nn.init.zeros_(self.step_time.bias)
        self.chunk_pos = nn.Parameter(torch.zeros(cfg.chunk_len, cfg.width))
        self.io = nn.ModuleDict({e.name: EmbodimentIO(e, cfg.width) for e in embodiments})
        self.embodiment_names = [e.name for e in embodiments]
        self.layers = nn.ModuleList([ExpertLayer(cfg) for _ in range(cfg.depth)])
        self.final_norm = nn.LayerNorm(cfg.width)
        nn.init.normal_(self.view_embed, std=0.02)
        nn.init.normal_(self.chunk_pos, std=0.02)

    def load_pretrained_vision(self, source: str) -> None:
        """Load a SigLIP checkpoint (local dir or hub name) into the tower."""
        from transformers import SiglipVisionModel

        self.vision.load_state_dict(SiglipVisionModel.from_pretrained(source).state_dict())

    # ---- per-embodiment routing -------------------------------------------------
    def _route(self, embodiment_ids: torch.Tensor, x: torch.Tensor, module: str, in_dim: str, out_width: int):
        """Apply each sample's own embodiment MLP; x [B, ..., max_dim] -> [B, ..., out]."""
        out = x.new_zeros(*x.shape[:-1], out_width)
        for i, name in enumerate(self.embodiment_names):
            rows = (embodiment_ids == i).nonzero(as_tuple=True)[0]
            if rows.numel():
                io = self.io[name]
                out[rows] = getattr(io, module)(x[rows][..., : getattr(io, in_dim)]).to(out.dtype)
        return out

    def decode(self, embodiment_ids: torch.Tensor, tokens: torch.Tensor, max_action_dim: int) -> torch.Tensor:
        """Action tokens [B, T, W] -> velocities [B, T, max_action_dim] (zero beyond each robot's dims)."""
        out = tokens.new_zeros(*tokens.shape[:-1], max_action_dim)
        for i, name in enumerate(self.embodiment_names):
            rows = (embodiment_ids == i).nonzero(as_tuple=True)[0]
            if rows.numel():
                io = self.io[name]
                out[rows, ..., : io.action_dim] = io.action_decoder(tokens[rows]).to(out.dtype)
        return out

    # ---- context (does not depend on H, x_t or t: computed once per batch) ------
    def encode_context(self, images: torch.Tensor, view_mask: torch.Tensor, state: torch.Tensor,
                       embodiment_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, V, 3, S, S] in [0, 1]; view_mask [B, V]; state [B, max_state_dim] normalized.

        Returns prefix tokens [B, V*k + 1, W] and their key mask [B, V*k + 1].
        """
        b, nv = images.shape[:2]
        pix = (images.flatten(0, 1) - 0.5) / 0.5  # SigLIP normalization (mean 0.5, std 0.5)
        patches = self.vision(pixel_values=pix.to(self.image_proj.weight.dtype)).last_hidden_state  # [B*V, P, D]
        side = int(math.isqrt(patches.shape[1]))
        k_side = int(math.isqrt(self.cfg.image_tokens_per_view))
        grid = patches.transpose(1, 2).reshape(b * nv, -1, side, side)
        pooled = F.adaptive_avg_pool2d(grid, k_side).flatten(2).transpose(1, 2)  # [B*V, k, D]
        img_tok = self.image_proj(pooled).view(b, nv, -1, self.cfg.width) + self.view_embed[:nv]
        img_tok = img_tok.flatten(1, 2)
        img_mask = view_mask.repeat_interleave(k_side * k_side, dim=1)
        state_tok = self._route(embodiment_ids, state, "state_encoder", "state_dim", self.cfg.width).unsqueeze(1)
        prefix = torch.cat([img_tok, state_tok], dim=1)
        mask = torch.cat([img_mask, torch.ones(b, 1, dtype=torch.bool, device=prefix.device)], dim=1)
        return prefix, mask

    def velocity(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, embodiment_ids: torch.Tensor,
                 x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predicted velocity v(x_t, t | context, C): x_t [B, T, max_action_dim], cond C [B, n, W].

        t [B], or [B, T] with a time per chunk step (expert.step_times: steps given clean have t = 0; the
        time token then carries the latest time, that of the steps being sampled)."""
        b, steps, max_a = x_t.shape
        act_tok = self._route(embodiment_ids, x_t, "action_encoder", "action_dim", self.cfg.width) + self.chunk_pos[:steps]
        if t.dim() == 2 and not self.cfg.step_times:
            raise ValueError("per-step flow times [B, T] need an expert built with step_times")
        if self.cfg.step_times:
            t_steps = t if t.dim() == 2 else t[:, None].expand(b, steps)
            act_tok = act_tok + self.step_time(timestep_embedding(t_steps, self.cfg.width).to(act_tok.dtype))
            t = t_steps.amax(dim=1)
        t_tok = self.time_mlp(timestep_embedding(t, self.cfg.width).to(act_tok.dtype)).unsqueeze(1)
        x = torch.cat([prefix, t_tok, act_tok], dim=1)
        mask = torch.cat([prefix_mask, torch.ones(b, 1 + steps, dtype=torch.bool, device=x.device)], dim=1)
        cond = cond.to(x.dtype)
        for layer in self.layers:
            x = layer(x, mask, cond)
        return self.decode(embodiment_ids, self.final_norm(x[:, -steps:]), max_a)
