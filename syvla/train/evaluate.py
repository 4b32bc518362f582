"""Evaluate a policy checkpoint in Meta-World, in-process (no Ray, no server).

Two measures:
* closed loop: success per task over N episodes with a fixed seed list (episode k of a
  task uses layout seed `seed + k`, as the endpoint evaluation does), the policy acting
  through `Policy.infer` on a `SimRobot`, executing `execute_steps` actions per chunk;
* open loop: flow-matching samples vs the expert's action chunks on held-out expert
  episodes (layout seeds `heldout_seed + k`, not used for training), as mean squared
  error in normalized units (per-dimension z-scores of the checkpoint's statistics)
  next to the mean-action baseline (predicting the dataset mean; 0 in those units).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    checkpoint: str = ""  # policy checkpoint directory (foundation format)
    tasks: tuple[str, ...] = ("reach-v3",)  # Meta-World v3 task names
    episodes: int = 20  # closed-loop episodes per task
    seed: int = 1000  # episode k uses layout seed seed + k
    max_steps: int = 300  # env steps per episode (Meta-World's limit is 500)
    execute_steps: int = 10  # actions executed per chunk before the policy is asked again; 0 = whole chunk
    image_size: int = 64  # camera px: the size the training demos were rendered at
    heldout_episodes: int = 10  # expert episodes per task for the open-loop error; 0 skips it
    heldout_seed: int = 5000  # held-out episode k uses layout seed heldout_seed + k
    endpoint: str = ""  # URL of a served policy: evaluate through syvla.serving.evaluate_endpoint instead

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise ValueError("EvalConfig.tasks must name at least one task")
        for name in ("max_steps", "image_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EvalConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("episodes", "execute_steps", "heldout_episodes"):
            if getattr(self, name) < 0:
                raise ValueError(f"EvalConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.checkpoint and not self.endpoint:
            raise ValueError("EvalConfig needs a checkpoint directory or an endpoint URL")


# ---- closed loop -----------------------------------------------------------------------------
def run_episode(policy, robot, task: str, seed: int, cfg: EvalConfig) -> dict:
    """One episode: infer a chunk, execute its first `execute_steps` actions, repeat until success or max_steps."""
    obs = robot.reset(task, seed)
    chunks, done, success = 0, False, False
    while not done:
        out = policy.infer({"embodiment": "metaworld", "images": obs["images"], "state": obs["state"],
                            "instruction": robot.instruction, "seed": seed * 100_003 + robot.steps})
        chunk = out["actions"][: cfg.execute_steps] if cfg.execute_steps else out["actions"]
        obs, success, done = robot.step_chunk(chunk)
        chunks += 1
    return {"task": task, "seed": seed, "success": bool(success), "steps": robot.steps, "chunks": chunks}


def closed_loop(policy, cfg: EvalConfig, log=print) -> dict:
    """Success rate per task over cfg.episodes episodes (seeds cfg.seed + k)."""
    from syvla.data.metaworld_sim import SimRobot

    episodes = []
    t0 = time.perf_counter()
    with SimRobot(image_size=cfg.image_size, max_steps=cfg.max_steps) as robot:
        for task in cfg.tasks:
            for k in range(cfg.episodes):
                ep = run_episode(policy, robot, task, cfg.seed + k, cfg)
                episodes.append(ep)
                log(f"[evaluate] {task} seed {ep['seed']}: {'success' if ep['success'] else 'failure'} "
                    f"after {ep['steps']} steps ({ep['chunks']} chunks)")
    per_task = {t: float(np.mean([e["success"] for e in episodes if e["task"] == t])) for t in cfg.tasks}
    return {"success_rate": float(np.mean([e["success"] for e in episodes])) if episodes else float("nan"),
            "per_task": per_task, "episodes": episodes, "seconds": time.perf_counter() - t0}


# ---- open loop -------------------------------------------------------------------------------
def heldout_samples(task: str, seeds, image_size: int, chunk_len: int) -> list[dict]:
    """Model samples (with their expert action chunks) of fresh expert episodes of `task`."""
    import pyarrow as pa

    from syvla.data.chunking import add_chunks, row_to_sample
    from syvla.data.metaworld_sim import SimRobot, run_expert_episode

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
def evaluate(cfg: EvalConfig, log=print) -> dict:
    """Closed-loop success (and, in-process, the open-loop error) for every task of `cfg`."""
    if cfg.endpoint:
        from syvla.serving.evaluate_endpoint import EndpointEvalConfig, evaluate_endpoint

        ecfg = EndpointEvalConfig(url=cfg.endpoint, tasks=cfg.tasks, episodes_per_task=cfg.episodes, seed=cfg.seed,
                                  max_steps=cfg.max_steps, execute_steps=cfg.execute_steps, image_size=cfg.image_size)
        return {"mode": "endpoint", "closed_loop": evaluate_endpoint(ecfg)}
    from syvla.model.policy import Policy

    policy = Policy.load(cfg.checkpoint)
    out = {"mode": "in-process", "checkpoint": cfg.checkpoint, "policy_version": policy.policy_version}
    if cfg.episodes:
        out["closed_loop"] = closed_loop(policy, cfg, log)
    if cfg.heldout_episodes:
        from syvla.model.checkpoint import load_checkpoint

        model, stats, _ = load_checkpoint(cfg.checkpoint)
        out["open_loop"] = {}
        for task in cfg.tasks:
            seeds = [cfg.heldout_seed + k for k in range(cfg.heldout_episodes)]
            samples = heldout_samples(task, seeds, cfg.image_size, model.cfg.expert.chunk_len)
            out["open_loop"][task] = open_loop_error(model, stats, samples, seed=cfg.seed)
            r = out["open_loop"][task]
            log(f"[evaluate] {task} open loop over {r['frames']} held-out frames: policy MSE {r['policy_mse']:.4f}, "
                f"mean-action baseline {r['baseline_mse']:.4f} (ratio {r['ratio']:.3f})")
    return out
