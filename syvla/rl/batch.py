"""The merged policy batch of one RL update (§3.3): rollout chunk steps with clipped GAE advantages plus
retrieved expert frames with advantage 1.0, each with its stored (tau, eps) pairs and behaviour version.

    adv, returns = rollout_advantages(steps, values, cfg.advantage)
    batch = merge_batch(steps, adv, expert_samples, expert_gae, behaviour_version, cfg, policy_cfg)

"We merge the two data sources into a single batch for policy optimization"
(App. A). Advantages are final here: `batch_advantages` fixes the expert ones
to 1.0 (or keeps their GAE in the "w/ standard Advantage" ablation) and nothing
renormalizes them afterwards. Pure functions, no Ray.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from syvla.data.chunking import loss_mask
from syvla.model.config import SyVLAConfig
from syvla.model.sample import Sample
from syvla.rl.advantages import AdvantageConfig, batch_advantages, trajectory_advantages
from syvla.rl.config import RLConfig
from syvla.rl.fpo import draw_mc_pairs
from syvla.rl.rollouts import RolloutSteps


def rollout_advantages(steps: RolloutSteps, values, cfg: AdvantageConfig) -> tuple[np.ndarray, np.ndarray]:
    """(advantages [M] clipped to [-clip, clip], lambda-returns [M]) per trajectory of `steps`.

    Every trajectory ended with a judged outcome (its 0/1 reward), so V after the
    last step is 0 (no bootstrap).
    """
    values = np.asarray(values, np.float32)
    if values.shape != (len(steps),):
        raise ValueError(f"values must be [M={len(steps)}], got {values.shape}")
    adv = np.zeros(len(steps), np.float32)
    ret = np.zeros(len(steps), np.float32)
    for a, b in steps.bounds:
        adv[a:b], ret[a:b] = trajectory_advantages(steps.rewards[a:b], values[a:b], cfg)
    return adv, ret


@dataclasses.dataclass
class PolicyBatch:
    """What the PPO learners train on. Rows: rollout steps first, then expert frames."""

    samples: list[Sample]  # raw units; build_batch normalizes
    advantages: np.ndarray  # [B] float32, final (no renormalization)
    is_expert: np.ndarray  # [B] bool
    behaviour_version: np.ndarray  # [B] int64: weights that l_old is computed with
    tau: torch.Tensor  # [B, N] stored flow times
    eps: torch.Tensor  # [B, N, T, A] stored noises

    def __len__(self) -> int:
        return len(self.samples)

    def select(self, rows: Sequence[int]) -> "PolicyBatch":
        rows = np.asarray(rows, np.int64)
        t = torch.from_numpy(rows)
        return PolicyBatch([self.samples[i] for i in rows], self.advantages[rows], self.is_expert[rows],
                           self.behaviour_version[rows], self.tau[t], self.eps[t])

    def shard(self, rank: int, world: int) -> "PolicyBatch":
        """Rows rank, rank + world, ... (every learner gets rollout and expert rows alike)."""
        return self.select(np.arange(rank, len(self), world))

    def summary(self) -> dict:
        ex = self.is_expert
        ro = ~ex
        return {"batch_rows": len(self), "rollout_rows": int(ro.sum()), "expert_rows": int(ex.sum()),
                "adv_rollout_mean": float(self.advantages[ro].mean()) if ro.any() else float("nan"),
                "adv_rollout_min": float(self.advantages[ro].min()) if ro.any() else float("nan"),
                "adv_rollout_max": float(self.advantages[ro].max()) if ro.any() else float("nan"),
                "adv_expert_mean": float(self.advantages[ex].mean()) if ex.any() else float("nan")}


def merge_batch(steps: RolloutSteps, rollout_adv, expert_samples: Sequence[Sample], expert_gae, current_version: int,
                cfg: RLConfig, policy_cfg: SyVLAConfig, generator: torch.Generator | None = None,
                expert_train_on_padding: bool = False) -> PolicyBatch:
    """Rollout steps + expert frames -> one PolicyBatch.

    rollout_adv [M]: clipped GAE of the rollout steps (`rollout_advantages`).
    expert_samples: retrieved expert frames ([] in the "w/o Expert Dataset" ablation).
    expert_gae [E] or None: their GAE, needed only when cfg.advantage.expert_gae.
    Expert frames have no behaviour policy: l_old uses the weights the update starts
    from (`current_version`), as PPO's theta_old. Rollout steps keep their own version.
    The (tau, eps) pairs are drawn here once and travel with the batch, so l_old and
    l_new see the same pairs (../shared/notes/rl.md).
    Expert frames are scored on the chunk steps fine-tuning fitted: `loss_mask(mask,
    expert_train_on_padding)` (`RLConfig.expert_train_on_padding(checkpoint)`), the one rule.
    """
    m, e = len(steps), len(expert_samples)
    if not cfg.use_expert_data and e:
        raise ValueError("use_expert_data=False ('w/o Expert Dataset') but expert samples were given")
    if cfg.advantage.expert_gae and e and expert_gae is None:
        raise ValueError("advantage.expert_gae=True ('w/ standard Advantage') needs the expert frames' GAE")
    ex_gae = np.asarray(expert_gae, np.float32) if expert_gae is not None else np.full(e, np.nan, np.float32)
    gae = np.concatenate([np.asarray(rollout_adv, np.float32), ex_gae])
    is_expert = np.concatenate([np.zeros(m, bool), np.ones(e, bool)])
    adv = batch_advantages(gae, is_expert, cfg.advantage)
    expert_samples = [dataclasses.replace(s, action_mask=loss_mask(s.action_mask, expert_train_on_padding))
                      for s in expert_samples]
    versions = np.concatenate([steps.versions, np.full(e, current_version, np.int64)])
    tau, eps = draw_mc_pairs(m + e, cfg.fpo.n_mc, policy_cfg.expert.chunk_len, policy_cfg.max_action_dim,
                             policy_cfg.flow, generator=generator)
    batch = PolicyBatch(list(steps.samples) + list(expert_samples), adv, is_expert, versions, tau, eps)
    if not cfg.use_rollout_data:  # an expert-only update: the rollouts only chose which frames to retrieve
        batch = batch.select(np.flatnonzero(is_expert))
    return batch
