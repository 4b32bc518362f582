"""Evaluate a policy checkpoint in Meta-World (pipelines/evaluate.py), in process or through an endpoint.

Two measures:
* closed loop: success per task over the episodes of an `EpisodeConfig` (syvla.sim.episodes:
  layout seeds `seed + k`), the policy acting through `Policy.infer` on a `SimRobot`, or through
  the robot API of a served policy (`endpoint`);
* open loop (in process only): flow-matching samples vs the expert's action chunks on held-out
  expert episodes (layout seeds `heldout_seed + k`, not used for training), as mean squared
  error in normalized units (per-dimension z-scores of the checkpoint's statistics) next to the
  mean-action baseline (predicting the dataset mean; 0 in those units).
"""

from __future__ import annotations

import dataclasses

from syvla.sim.episodes import Endpoint, EpisodeConfig, evaluate_endpoint, evaluate_policy


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Which policy is evaluated, and the open-loop part; the episodes are an EpisodeConfig."""

    checkpoint: str = ""  # policy checkpoint directory (foundation format)
    endpoint: str = ""  # URL of a served policy: closed loop through its robot API instead (no open loop)
    heldout_episodes: int = 10  # expert episodes per task for the open-loop error; 0 skips it
    heldout_seed: int = 5000  # held-out episode k uses layout seed heldout_seed + k

    def __post_init__(self):
        if self.heldout_episodes < 0:
            raise ValueError(f"EvalConfig.heldout_episodes must be >= 0, got {self.heldout_episodes}")
        if not self.checkpoint and not self.endpoint:
            raise ValueError("EvalConfig needs a checkpoint directory or an endpoint URL")


# ---- open loop -------------------------------------------------------------------------------
def heldout_samples(task: str, seeds, image_size: int, chunk_len: int) -> list[dict]:
    """Model samples (with their expert action chunks) of fresh expert episodes of `task`."""
    import pyarrow as pa

    from syvla.data.chunking import add_chunks, row_to_sample
    from syvla.sim.expert import run_expert_episode
    from syvla.sim.robot import SimRobot

    with SimRobot(image_size=image_size) as robot:
        tables = [run_expert_episode(task, int(s), image_size=image_size, episode_id=k, robot=robot)
                  for k, s in enumerate(seeds)]
    table = add_chunks(pa.concat_tables(tables), chunk_len)
    return [row_to_sample(r) for r in table.to_pylist()]


def open_loop_error(model, norm_stats, samples: list[dict], batch_size: int = 32, seed: int = 0) -> dict:
    """MSE of sampled chunks vs expert chunks over valid steps and dims, in normalized units,
    for the policy and for the mean-action baseline; `ratio` = policy / baseline."""
    import torch

    from syvla.model.processing import build_batch

    sq_policy = sq_base = count = 0.0
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    for i in range(0, len(samples), batch_size):
        batch = build_batch(samples[i:i + batch_size], model.processor, model.cfg, norm_stats, training=True)
        noise = torch.randn(batch.actions.shape, generator=gen)
        with torch.no_grad():
            pred = model.sample_actions(batch, noise=noise).float()
        mask = (batch.action_mask.unsqueeze(-1) & batch.dim_mask.unsqueeze(1)).float()
        target = batch.actions.float()
        sq_policy += float((((pred - target) ** 2) * mask).sum())
        sq_base += float(((target ** 2) * mask).sum())  # the mean action is 0 after normalization
        count += float(mask.sum())
    policy_mse, base_mse = sq_policy / max(count, 1.0), sq_base / max(count, 1.0)
    return {"policy_mse": policy_mse, "baseline_mse": base_mse, "ratio": policy_mse / max(base_mse, 1e-12),
            "frames": len(samples)}


# ---- both --------------------------------------------------------------------------------------
def evaluate(cfg: EvalConfig, episodes: EpisodeConfig, log=print) -> dict:
    """Closed-loop success (and, in process, the open-loop error) for every task of `episodes`."""
    if cfg.endpoint:
        return {"mode": "endpoint", "closed_loop": evaluate_endpoint(Endpoint(url=cfg.endpoint), episodes)}
    from syvla.model.policy import Policy

    policy = Policy.load(cfg.checkpoint)
    out = {"mode": "in-process", "checkpoint": cfg.checkpoint, "policy_version": policy.policy_version}
    if episodes.episodes:
        out["closed_loop"] = evaluate_policy(policy, episodes, log=lambda line: log(f"[evaluate] {line}"))
    if cfg.heldout_episodes:
        from syvla.model.checkpoint import load_checkpoint

        model, stats, _ = load_checkpoint(cfg.checkpoint)
        out["open_loop"] = {}
        for task in episodes.tasks:
            seeds = [cfg.heldout_seed + k for k in range(cfg.heldout_episodes)]
            samples = heldout_samples(task, seeds, episodes.image_size, model.cfg.expert.chunk_len)
            out["open_loop"][task] = open_loop_error(model, stats, samples, seed=episodes.seed)
            r = out["open_loop"][task]
            log(f"[evaluate] {task} open loop over {r['frames']} held-out frames: policy MSE {r['policy_mse']:.4f}, "
                f"mean-action baseline {r['baseline_mse']:.4f} (ratio {r['ratio']:.3f})")
    return out
