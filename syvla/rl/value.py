"""Value model V(s) for Similar-Sample Guided RL (App. A "Reinforcement Learning").

App. A: "a value model of about 100M parameters with a Siglip encoder and a
transformer network to predict the value of current state based on
observation", warmed up on Monte-Carlo returns of the imitation-learning set
before RL so its early advantage estimates are not noise.

Architecture (paper preset ~99M): a SigLIP-B/16 vision tower (85.8M, no
pooling head) encodes each camera view; its patch grid is average-pooled to a
few tokens per view and projected to the trunk width; a learned value token,
the view tokens (+ a learned embedding per view and position) and an optional
proprioceptive-state token go through a small pre-norm transformer; a linear
head on the value token gives the scalar V(s).

Batches are dicts: images [B, V, 3, H, W] float in [0, 1], state [B, S]
(normalized) when the config has a state, and the regression target
(`RETURNS`) [B] for warm-up.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

import syvla._compat  # noqa: F401  (torchvision's ops first, however syvla itself was imported)
from syvla import constants as K
from syvla.cli import Presets, field
from syvla.model.config import VisionTowerConfig

RETURNS = "returns"  # batch key: value target [B] (Monte-Carlo return in warm-up, lambda-return in RL)


@dataclasses.dataclass(frozen=True)
class ValueConfig:
    """The value model. Sizes beyond "about 100M, SigLIP + transformer" are ours (the paper gives none)."""

    vision: VisionTowerConfig = field(default_factory=lambda: VisionTowerConfig(
        image_size=32, patch_size=8, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
        help="the value model's SigLIP tower (--value.vision.*)")
    num_views: int = field(3, "cameras per observation, in a fixed order (App. A: centre + two wrists)")
    state_dim: int = field(0, "normalized proprioceptive state size; 0 = images only")
    tokens_per_view: int = field(4, "patch grid average-pooled to this many tokens per view (a perfect square)")
    width: int = field(32, "trunk transformer width")
    depth: int = field(1, "trunk layers")
    num_heads: int = field(2, "trunk attention heads")
    ff_ratio: float = field(4.0, "trunk feed-forward width / width")
    dropout: float = field(0.0, "trunk dropout")
    huber_delta: float = field(1.0, "Huber loss threshold, in return units (returns lie in [0, 1] with 0/1 "
                                    "rewards)")

    def __post_init__(self):
        for name in ("num_views", "tokens_per_view", "width", "depth", "num_heads", "ff_ratio", "huber_delta"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ValueConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.state_dim < 0:
            raise ValueError(f"ValueConfig.state_dim must be >= 0, got {self.state_dim}")
        side = math.isqrt(self.tokens_per_view)
        if side * side != self.tokens_per_view:
            raise ValueError(f"ValueConfig.tokens_per_view must be a perfect square, got {self.tokens_per_view}")
        grid = self.vision.image_size // self.vision.patch_size
        if side > grid:
            raise ValueError(f"ValueConfig.tokens_per_view {self.tokens_per_view} exceeds the {grid}x{grid} patch grid")
        if self.width % self.num_heads:
            raise ValueError(f"ValueConfig.width {self.width} must be divisible by num_heads {self.num_heads}")
        if self.vision.hidden_size % self.vision.num_heads:
            raise ValueError("ValueConfig.vision.hidden_size must be divisible by vision.num_heads")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ValueConfig.dropout must be in [0, 1), got {self.dropout}")


def debug_value_config(**overrides) -> ValueConfig:
    """Tiny: builds in milliseconds, a warm-up step in a few ms on a CPU."""
    return dataclasses.replace(ValueConfig(), **overrides)


def paper_value_config(**overrides) -> ValueConfig:
    """~99M parameters (App. A: "about 100M"): SigLIP-B/16 at 224 px (85.8M) + a 4-layer, 512-wide trunk."""
    cfg = ValueConfig(
        vision=VisionTowerConfig(image_size=224, patch_size=16, hidden_size=768, num_layers=12, num_heads=12,
                                 intermediate_size=3072, pretrained="google/siglip-base-patch16-224"),
        num_views=3,
        tokens_per_view=16,
        width=512,
        depth=4,
        num_heads=8,
    )
    return dataclasses.replace(cfg, **overrides)


VALUE_PRESETS = Presets("value", {"debug": debug_value_config, "paper": paper_value_config})


def value_preset(name: str, **overrides) -> ValueConfig:
    return VALUE_PRESETS.build(name, **overrides)


def _siglip_config(v: VisionTowerConfig):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                              num_hidden_layers=v.num_layers, num_attention_heads=v.num_heads,
                              image_size=v.image_size, patch_size=v.patch_size,
                              vision_use_head=False)  # we pool patch tokens ourselves


class ValueModel(nn.Module):
    """V(s): images [B, V, 3, H, W] in [0, 1] (+ state [B, S]) -> values [B] float32."""

    def __init__(self, cfg: ValueConfig):
        super().__init__()
        from transformers import SiglipVisionModel

        self.cfg = cfg
        self.vision = SiglipVisionModel(_siglip_config(cfg.vision))  # random init; see `build` for weights
        self.proj = nn.Linear(cfg.vision.hidden_size, cfg.width)
        n_img = cfg.num_views * cfg.tokens_per_view
        self.pos = nn.Parameter(torch.randn(n_img, cfg.width) * 0.02)  # which view, which pooled cell
        self.value_token = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02)
        self.state_proj = nn.Linear(cfg.state_dim, cfg.width) if cfg.state_dim else None
        layer = nn.TransformerEncoderLayer(cfg.width, cfg.num_heads, int(round(cfg.width * cfg.ff_ratio)),
                                           cfg.dropout, activation="gelu", batch_first=True, norm_first=True)
        self.trunk = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, 1)

    @classmethod
    def build(cls, cfg: ValueConfig, load_pretrained: bool = True) -> "ValueModel":
        """Random trunk; the SigLIP tower from `cfg.vision.pretrained` (local dir or hub name) if set."""
        model = cls(cfg)
        if load_pretrained and cfg.vision.pretrained:
            from transformers import SiglipVisionModel

            tower = SiglipVisionModel.from_pretrained(cfg.vision.pretrained, vision_use_head=False)
            want, got = _siglip_config(cfg.vision), tower.config
            for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "image_size", "patch_size"):
                if getattr(want, field) != getattr(got, field):
                    raise ValueError(f"SigLIP checkpoint {cfg.vision.pretrained!r} has {field}="
                                     f"{getattr(got, field)}, ValueConfig.vision asks for {getattr(want, field)}")
            model.vision.load_state_dict(tower.state_dict())
        return model

    def forward(self, images: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.cfg
        if images.dim() != 5 or images.shape[1] != cfg.num_views or images.shape[2] != 3:
            raise ValueError(f"images must be [B, V={cfg.num_views}, 3, H, W] in [0, 1], got {tuple(images.shape)}")
        if (state is None) != (self.state_proj is None):
            raise ValueError(f"this value model takes state_dim={cfg.state_dim}; "
                             f"got state {None if state is None else tuple(state.shape)}")
        b, v = images.shape[:2]
        dtype = self.proj.weight.dtype
        x = images.reshape(b * v, *images.shape[2:]).to(dtype)
        size = cfg.vision.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x * 2.0 - 1.0  # SigLIP's preprocessing: mean 0.5, std 0.5
        patches = self.vision(pixel_values=x).last_hidden_state  # [B*V, P, Hv]
        grid = size // cfg.vision.patch_size
        side = math.isqrt(cfg.tokens_per_view)
        patches = patches.transpose(1, 2).reshape(b * v, -1, grid, grid)
        pooled = F.adaptive_avg_pool2d(patches, side).flatten(2).transpose(1, 2)  # [B*V, tpv, Hv]
        tokens = self.proj(pooled).reshape(b, v * cfg.tokens_per_view, cfg.width) + self.pos
        parts = [self.value_token.expand(b, -1, -1), tokens]
        if self.state_proj is not None:
            if state.shape != (b, cfg.state_dim):
                raise ValueError(f"state must be [B={b}, S={cfg.state_dim}], got {tuple(state.shape)}")
            parts.append(self.state_proj(state.to(dtype)).unsqueeze(1))
        h = self.trunk(torch.cat(parts, dim=1))
        return self.head(self.norm(h[:, 0])).squeeze(-1).float()


def value_loss(pred: torch.Tensor, target: torch.Tensor, delta: float = 1.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """L_V = Huber(V - R), mean over samples (optionally weighted). pred, target, weight: [B]."""
    if pred.shape != target.shape or pred.dim() != 1:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be [B]")
    per = F.huber_loss(pred.float(), target.float(), reduction="none", delta=delta)
    if weight is None:
        return per.mean()
    w = weight.float()
    return (per * w).sum() / w.sum().clamp_min(1e-8)


def warmup_value(model: ValueModel, batches: Iterable[Mapping[str, torch.Tensor]], *, max_steps: int | None = None,
                 lr: float = 1e-4, weight_decay: float = 0.0, grad_clip: float = 1.0,
                 optimizer: torch.optim.Optimizer | None = None, device=None) -> list[float]:
    """Fit V to Monte-Carlo returns of the imitation-learning set (App. A) with the Huber loss.

    batches yields {"images": [B, V, 3, H, W], "state": [B, S] (if the model has
    state), RETURNS: [B]}; iterate until exhausted or `max_steps`. Pass an
    iterator that repeats the dataset for several epochs. Returns the loss of
    each step. The targets come from `syvla.rl.advantages.monte_carlo_returns`
    per demonstration episode (whole episodes are known offline, so no bootstrap).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    history: list[float] = []
    for step, batch in enumerate(batches):
        if max_steps is not None and step >= max_steps:
            break
        if RETURNS not in batch:
            raise KeyError(f"warm-up batch has no {RETURNS!r} (the Monte-Carlo return targets); keys: {sorted(batch)}")
        state = batch.get(K.STATE)
        pred = model(batch[K.IMAGES].to(device), None if state is None else state.to(device))
        loss = value_loss(pred, batch[RETURNS].to(device), delta=model.cfg.huber_delta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        history.append(loss.item())
    model.eval()
    return history
