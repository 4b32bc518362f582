"""Advantages and returns for Similar-Sample Guided RL (paper §3.3, App. A).

One step is one policy decision (one action chunk). Rewards are 0/1, given once
at the end of an episode by a human or the simulator (App. A), so most rewards
are 0 and the last one says whether the episode succeeded.

- Rollout samples: A = clip(GAE, -0.8, 0.8). App. A clips because the value
  estimates have limited confidence and the expert data is the stronger signal.
- Expert samples (retrieved from the imitation-learning set): A = 1.0, which
  turns the policy-gradient term into "raise the expert action's likelihood".
  The ablation "w/ standard advantage" (GAE on expert samples too) collapsed
  training in the paper (Table 3: success 0.00); `expert_gae=True` reproduces it.
- Nothing is renormalized after the expert advantages are fixed: a batch mean /
  std normalization would rescale (and could flip the sign of) the 1.0 that
  the method relies on, and the clip already bounds the rollout advantages.

All functions are pure; they take array-likes (numpy arrays, lists, CPU torch
tensors) and return numpy arrays.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from syvla.cli import field


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
    """How advantages are computed. gamma / lam are not given by the paper (PPO defaults)."""

    gamma: float = field(0.99, "discount per policy step (per chunk)")
    lam: float = field(0.95, "GAE lambda")
    clip: float = field(0.8, "rollout GAE is clipped to [-clip, clip] (App. A); math.inf disables")
    expert_advantage: float = field(1.0, "fixed advantage of retrieved expert samples (§3.3)")
    expert_gae: bool = field(False, 'ablation "w/ standard advantage": expert samples use their GAE too')

    def __post_init__(self):
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"AdvantageConfig.gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"AdvantageConfig.lam must be in [0, 1], got {self.lam}")
        if not self.clip > 0.0:
            raise ValueError(f"AdvantageConfig.clip must be > 0 (math.inf disables clipping), got {self.clip}")
        if not math.isfinite(self.expert_advantage):
            raise ValueError(f"AdvantageConfig.expert_advantage must be finite, got {self.expert_advantage}")


def _vector(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D [T], got shape {arr.shape}")
    return arr


def gae(rewards, values, *, gamma: float, lam: float,
        bootstrap_value: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Generalized Advantage Estimation over ONE trajectory (unclipped).

    rewards [T]: r_t received after the action at step t.
    values [T]: V(s_t) from the value model.
    bootstrap_value: None when the episode ended (success or failure was
        judged), so V(s_T) = 0; otherwise the trajectory was cut before the end
        (time limit, buffer boundary) and V(s_T) = bootstrap_value.

    delta_t = r_t + gamma V(s_{t+1}) - V(s_t);  A_t = sum_k (gamma lam)^k delta_{t+k}.
    Returns (advantages [T], returns [T]) in float32, where returns = A + V are
    the lambda-returns the value model regresses to during RL.
    """
    r = _vector(rewards, "rewards")
    v = _vector(values, "values")
    if r.shape != v.shape:
        raise ValueError(f"rewards {r.shape} and values {v.shape} must have the same length")
    if r.size == 0:
        raise ValueError("gae needs a trajectory of at least one step")
    next_v = np.append(v[1:], 0.0 if bootstrap_value is None else float(bootstrap_value))
    delta = r + gamma * next_v - v
    adv = np.empty_like(delta)
    acc = 0.0
    for t in range(delta.size - 1, -1, -1):  # trajectories are short (tens to hundreds of chunks)
        acc = delta[t] + gamma * lam * acc
        adv[t] = acc
    return adv.astype(np.float32), (adv + v).astype(np.float32)


def monte_carlo_returns(rewards, *, gamma: float, bootstrap_value: float = 0.0) -> np.ndarray:
    """Discounted return-to-go of ONE trajectory: R_t = sum_k gamma^k r_{t+k} (+ gamma^(T-t) bootstrap).

    rewards [T] -> returns [T] float32. Used to warm up the value model on the
    offline imitation-learning set (App. A), where whole episodes are known.
    """
    r = _vector(rewards, "rewards")
    out = np.empty_like(r)
    acc = float(bootstrap_value)
    for t in range(r.size - 1, -1, -1):
        acc = r[t] + gamma * acc
        out[t] = acc
    return out.astype(np.float32)


def clip_advantages(advantages, bound: float = 0.8) -> np.ndarray:
    """Clip to [-bound, bound] (App. A: value estimates have limited confidence)."""
    if not bound > 0:
        raise ValueError(f"clip bound must be > 0, got {bound}")
    return np.clip(np.asarray(advantages, dtype=np.float32), -bound, bound)


def trajectory_advantages(rewards, values, cfg: AdvantageConfig,
                          bootstrap_value: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clipped GAE of one trajectory: (advantages [T] in [-clip, clip], value targets [T]).

    The value targets come from the unclipped GAE: the clip bounds the policy
    update only, not what the value model should predict.
    """
    adv, returns = gae(rewards, values, gamma=cfg.gamma, lam=cfg.lam, bootstrap_value=bootstrap_value)
    return clip_advantages(adv, cfg.clip), returns


def batch_advantages(gae_advantages, is_expert, cfg: AdvantageConfig) -> np.ndarray:
    """Advantages of one mixed policy batch: [B] float32.

    gae_advantages [B]: clipped GAE per sample (from `trajectory_advantages`).
        Entries of expert samples are ignored unless `cfg.expert_gae`; they may
        be NaN when no GAE was computed for them.
    is_expert [B] bool: True for samples retrieved from the expert set.

    Expert samples get `cfg.expert_advantage` (1.0, §3.3). No renormalization
    afterwards (see the module docstring).
    """
    adv = np.asarray(gae_advantages.detach().cpu() if hasattr(gae_advantages, "detach") else gae_advantages,
                     dtype=np.float32)
    expert = np.asarray(is_expert.detach().cpu() if hasattr(is_expert, "detach") else is_expert, dtype=bool)
    if adv.shape != expert.shape or adv.ndim != 1:
        raise ValueError(f"gae_advantages {adv.shape} and is_expert {expert.shape} must both be [B]")
    if cfg.expert_gae:
        out = adv.copy()
    else:
        out = np.where(expert, np.float32(cfg.expert_advantage), adv).astype(np.float32)
    if not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out)).tolist()
        raise ValueError(f"non-finite advantages at batch positions {bad[:8]} "
                         f"(expert_gae={cfg.expert_gae}: expert samples need a GAE in this mode)")
    return out
