"""FPO-style PPO objective for the flow-matching action expert (§3.3, App. A).

The paper adapts PPO to its flow-matching policy without saying how the
likelihood ratio is formed. Per-step likelihood methods (DPPO, ReinFlow,
Flow-GRPO) score an action through its own noisy denoising chain, which the
retrieved expert samples do not have. Flow Policy Optimization (FPO, arXiv
2507.21053; FPO++, arXiv 2602.02481) instead forms the ratio from conditional
flow-matching (CFM) losses on stored (time, noise) pairs, so any (observation,
action) pair can be scored and serving stays a plain ODE sampler:

    l_i   = CFM loss of the chunk at (tau_i, eps_i), i = 1..N_mc   (syvla.model.flow)
    rho_i = exp(clip(l_old_i - l_new_i, -c, c))
    L     = -mean_{b,i} min(rho_bi A_b, clip(rho_bi, 1 - eps, 1 + eps) A_b)

With A = 1.0 on expert samples, descending L lowers the expert chunk's CFM
loss, i.e. raises its likelihood bound: the paper's "maximizing expert action
likelihood", held inside the PPO trust region by the clip.

The time convention and the CFM maths, including the per-pair losses
`flow.cfm_losses` that `SyVLA.per_sample_flow_losses` evaluates, come from
`syvla.model.flow` (t = 1 is noise); nothing here restates them.
"""

from __future__ import annotations

import dataclasses

import torch

from syvla.cli import field
from syvla.model import flow
from syvla.model.config import FlowConfig


@dataclasses.dataclass(frozen=True)
class FPOConfig:
    """The FPO-style PPO update. The paper gives no values; these are FPO++-style (small clip, 8-16 pairs)."""

    n_mc: int = field(8, "(tau, eps) pairs per sample, drawn once at collection and stored")
    clip_eps: float = field(0.05, "PPO clip on the ratio: [1 - clip_eps, 1 + clip_eps]")
    log_ratio_clip: float = field(3.0, "bound on l_old - l_new before exp (keeps rho finite)")

    def __post_init__(self):
        if self.n_mc <= 0:
            raise ValueError(f"FPOConfig.n_mc must be > 0, got {self.n_mc}")
        if not 0.0 < self.clip_eps < 1.0:
            raise ValueError(f"FPOConfig.clip_eps must be in (0, 1), got {self.clip_eps}")
        if not self.log_ratio_clip > 0.0:
            raise ValueError(f"FPOConfig.log_ratio_clip must be > 0, got {self.log_ratio_clip}")


def draw_mc_pairs(batch: int, n_mc: int, chunk_len: int, action_dim: int, flow_cfg: FlowConfig,
                  generator: torch.Generator | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the (time, noise) pairs a sample is scored on: (tau [B, N], eps [B, N, T, A]).

    tau follows the training time distribution (`flow.sample_time`) so the
    ratio is measured where the policy was trained. Draw once per sample and
    store them with it: the old and the new loss must see the same pairs.
    `generator` is a CPU generator; tensors are moved to `device` afterwards.
    """
    if min(batch, n_mc, chunk_len, action_dim) <= 0:
        raise ValueError(f"draw_mc_pairs sizes must be > 0, got batch={batch} n_mc={n_mc} "
                         f"chunk_len={chunk_len} action_dim={action_dim}")
    tau = flow.sample_time(batch * n_mc, flow_cfg, generator=generator).view(batch, n_mc)
    eps = torch.randn(batch, n_mc, chunk_len, action_dim, generator=generator, dtype=torch.float32)
    return tau.to(device), eps.to(device)


def fpo_ratio(l_new: torch.Tensor, l_old: torch.Tensor, log_ratio_clip: float = 3.0) -> torch.Tensor:
    """rho = exp(clip(l_old - l_new, -c, c)): [B, N]. A lower new loss means a likelier action, rho > 1."""
    return torch.exp(torch.clamp(l_old.detach().float() - l_new.float(), -log_ratio_clip, log_ratio_clip))


def fpo_loss(l_new: torch.Tensor, l_old: torch.Tensor, advantages: torch.Tensor, clip_eps: float = 0.05,
             log_ratio_clip: float = 3.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped PPO objective on the FPO ratio.

    l_new [B, N] (with grad), l_old [B, N] (behaviour weights, no grad), advantages [B].
    Returns (scalar loss, stats). Every (sample, pair) counts equally in the mean.
    stats hold detached 0-d tensors (no host sync inside the update loop):
      clip_fraction: share of pairs with |rho - 1| > clip_eps (the trust region is hit);
      ratio_min / ratio_max / ratio_mean over all pairs.
    Pairs whose log-ratio is past +-log_ratio_clip get no gradient (clamp), like
    PPO's clipped side.
    """
    if l_new.shape != l_old.shape or l_new.dim() != 2:
        raise ValueError(f"l_new {tuple(l_new.shape)} and l_old {tuple(l_old.shape)} must both be [B, N]")
    if advantages.shape != l_new.shape[:1]:
        raise ValueError(f"advantages must be [B={l_new.shape[0]}], got {tuple(advantages.shape)}")
    rho = fpo_ratio(l_new, l_old, log_ratio_clip)
    adv = advantages.detach().float().unsqueeze(1)  # [B, 1]
    surrogate = torch.minimum(rho * adv, torch.clamp(rho, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    loss = -surrogate.mean()
    with torch.no_grad():
        r = rho.detach()
        stats = {
            "clip_fraction": ((r - 1.0).abs() > clip_eps).float().mean(),
            "ratio_min": r.min(),
            "ratio_max": r.max(),
            "ratio_mean": r.mean(),
        }
    return loss, stats
