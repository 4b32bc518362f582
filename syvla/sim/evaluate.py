"""Evaluate a policy checkpoint in Meta-World (pipelines/evaluate.py), in process or through an endpoint.

Two measures:
* closed loop: success per task over the episodes of an `EpisodeConfig` (syvla.sim.episodes:
  layout seeds `seed + k`), the policy acting through `Policy.infer` on a `SimRobot`, or through
  the robot API of a served policy (`endpoint`);
* open loop (in process only): flow-matching samples vs the expert's action chunks on held-out
  expert episodes (layout seeds `heldout_seed + k`, not used for training), or on the robot
  datasets of a held-out prepared root (`heldout_data`: any robot, e.g. one of your own), as mean
  squared error in normalized units (per-dimension z-scores of the checkpoint's statistics) next
  to the mean-action baseline (predicting the dataset mean; 0 in those units).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from syvla.cli import field
from syvla.sim.episodes import Endpoint, EpisodeConfig, evaluate_endpoint, evaluate_policy


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Which policy is evaluated, and the open-loop part; the episodes are an EpisodeConfig."""

    checkpoint: str = field("", "policy checkpoint directory (foundation format)")
    endpoint: str = field("", "URL of a served policy: closed loop through its robot API instead (no open loop)")
    api_key: str = field("", "with endpoint: sent as `x-api-key` on every call ('' = none, an open server)")
    heldout_episodes: int = field(10, "expert episodes per task for the open-loop error; 0 skips it")
    heldout_seed: int = field(5000, "held-out episode k uses layout seed heldout_seed + k (not used for training)")
    heldout_data: str = field("", "prepared root (prepare_data output) of held-out episodes: open loop on its robot "
                                  "datasets instead of fresh Meta-World episodes")
    heldout_frames: int = field(512, "with heldout_data: frames scored per dataset, evenly spaced over its rows")
    vqa: str = field("", "held-out LLaVA JSON (pipelines/make_sim_vqa.py's heldout.json): exact-match VQA accuracy "
                         "of the policy's VLM too (in process only)")

    def __post_init__(self):
        if self.heldout_episodes < 0:
            raise ValueError(f"EvalConfig.heldout_episodes must be >= 0, got {self.heldout_episodes}")
        if self.heldout_frames <= 0:
            raise ValueError(f"EvalConfig.heldout_frames must be > 0, got {self.heldout_frames}")
        if not self.checkpoint and not self.endpoint:
            raise ValueError("EvalConfig needs a checkpoint directory or an endpoint URL")
        if self.api_key and not self.endpoint:
            raise ValueError("EvalConfig.api_key is for an endpoint; a checkpoint is evaluated in process")
        if self.vqa and self.endpoint:
            raise ValueError("EvalConfig.vqa scores a checkpoint in process; the robot API answers no questions")
        if self.vqa and not Path(self.vqa).is_file():
            raise ValueError(f"EvalConfig.vqa: {self.vqa} is not a file (pipelines/make_sim_vqa.py writes heldout.json)")


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


def prepared_samples(root: str, frames: int, embodiments) -> dict[str, list]:
    """{robot dataset: up to `frames` evenly spaced model samples} of a prepared root.

    `embodiments`: the names the model knows; a robot dataset it does not know is an error naming both.
    """
    import numpy as np
    import pyarrow.parquet as pq

    from syvla import constants as K
    from syvla.data import prepared
    from syvla.data.chunking import row_to_sample

    manifest = prepared.read_manifest(root)
    out = {}
    for name, folder in prepared.shard_dirs(root, manifest).items():
        if manifest.datasets[name].kind == K.KIND_VQA:
            continue
        if name not in embodiments:
            raise ValueError(f"held-out dataset {name!r} of {root} is a robot this checkpoint does not know "
                             f"(it knows {sorted(embodiments)})")
        shards = sorted(folder.glob(prepared.SHARD_GLOB))
        if not shards:
            raise ValueError(f"held-out dataset {name!r} of {root}: no {prepared.SHARD_GLOB} shards in {folder}")
        table = pq.read_table(shards)
        table = table.filter(np.asarray(table.column(K.KIND).to_pylist()) == K.KIND_ROBOT)
        if table.num_rows == 0:
            raise ValueError(f"held-out dataset {name!r} of {root} has no robot rows")
        pick = np.unique(np.linspace(0, table.num_rows - 1, min(frames, table.num_rows)).round().astype(int))
        out[name] = [row_to_sample(r) for r in table.take(pick).to_pylist()]
    if not out:
        raise ValueError(f"{root} holds no robot dataset to score open loop")
    return out


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
        return {"mode": "endpoint", "closed_loop": evaluate_endpoint(Endpoint(url=cfg.endpoint, api_key=cfg.api_key),
                                                                   episodes)}
    from syvla.model.policy import Policy

    policy = Policy.load(cfg.checkpoint)
    out = {"mode": "in-process", "checkpoint": cfg.checkpoint, "policy_version": policy.policy_version}
    if episodes.episodes:
        out["closed_loop"] = evaluate_policy(policy, episodes, log=lambda line: log(f"[evaluate] {line}"))
    if cfg.heldout_data or cfg.heldout_episodes:
        from syvla.model.checkpoint import load_checkpoint

        model, stats, _ = load_checkpoint(cfg.checkpoint)
        if cfg.heldout_data:
            sets = prepared_samples(cfg.heldout_data, cfg.heldout_frames, [e.name for e in model.cfg.embodiments])
        else:
            seeds = [cfg.heldout_seed + k for k in range(cfg.heldout_episodes)]
            sets = {task: heldout_samples(task, seeds, episodes.image_size, model.cfg.expert.chunk_len)
                    for task in episodes.tasks}
        out["open_loop"] = {}
        for name, samples in sets.items():
            r = out["open_loop"][name] = open_loop_error(model, stats, samples, seed=episodes.seed)
            log(f"[evaluate] {name} open loop over {r['frames']} held-out frames: policy MSE {r['policy_mse']:.4f}, "
                f"mean-action baseline {r['baseline_mse']:.4f} (ratio {r['ratio']:.3f})")
    if cfg.vqa:
        from syvla.intervals import SuccessRate
        from syvla.sim.vqa import score

        r = out["vqa"] = score(policy, cfg.vqa)
        log(f"[evaluate] VQA exact match on {cfg.vqa}: {SuccessRate.from_dict(r['accuracy'])}")
    return out
