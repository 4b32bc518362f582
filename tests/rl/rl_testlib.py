"""Helpers of the RL tests: Meta-World-shaped expert episodes and served episodes in a replay buffer."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from syvla import constants as K
from syvla.data.columns import list_column
from syvla.data.images import encode_png
from syvla.data.schema import FRAME_SCHEMA
from syvla.model.sample import Sample
from syvla.serving import protocol as P
from syvla.serving import replay_buffer as rb

CAMERAS = ("corner2", "topview", "gripperPOV")
STATE_DIM, ACTION_DIM, CHUNK = 39, 4, 50
TASK = "reach the red goal position"


def frame_images(rng: np.random.Generator, side: int, shade: float) -> list[np.ndarray]:
    """Three views: noise plus a brightness level `shade` in [0, 1] that similar frames share."""
    base = int(40 + 180 * shade)
    return [np.clip(base + rng.integers(-20, 20, (side, side, 3)), 0, 255).astype(np.uint8) for _ in CAMERAS]


def expert_table(episode_id: int, n_frames: int = 12, seed: int = 0, success: bool = True, side: int = 32,
                 task: str = TASK) -> pa.Table:
    """One Meta-World-shaped demonstration in FRAME_SCHEMA; frame t's images have shade t / (n - 1)."""
    rng = np.random.default_rng([seed, episode_id])
    images = [[encode_png(im) for im in frame_images(rng, side, t / max(1, n_frames - 1))] for t in range(n_frames)]
    state = rng.standard_normal((n_frames, STATE_DIM)).astype(np.float32)
    action = rng.uniform(-1, 1, (n_frames, ACTION_DIM)).astype(np.float32)
    return pa.Table.from_pydict({
        K.DATASET: ["metaworld"] * n_frames, K.EPISODE_ID: np.full(n_frames, episode_id, np.int64),
        K.FRAME_INDEX: np.arange(n_frames, dtype=np.int64), K.TIMESTAMP: np.arange(n_frames) / 80.0,
        K.TASK: [task] * n_frames, K.COT: [None] * n_frames, K.IMAGE_VIEWS: [list(CAMERAS)] * n_frames,
        K.IMAGES: images, K.STATE: list_column(state), K.ACTION: list_column(action),
        K.SUCCESS: [success] * n_frames, K.KIND: [K.KIND_ROBOT] * n_frames, K.CONVERSATION: [None] * n_frames,
    }, schema=FRAME_SCHEMA)


def write_episode(writer: rb.ReplayWriter, version: int, n_steps: int, reward: int | None, seed: int = 0,
                  side: int = 32, uid: str | None = None, step_versions=None, instruction: str = TASK) -> str:
    """A served episode as the server records it: episode record, n step records, the 0/1 reward."""
    rng = np.random.default_rng(seed)
    eid = P.make_episode_id(uid or f"{seed:032x}", version, b"rl-test")
    now = time.time()
    records = [{"kind": rb.KIND_EPISODE, "episode_id": eid, "time": now, "policy_version": version,
                "embodiment": "metaworld", "instruction": instruction}]
    for t in range(n_steps):
        imgs = frame_images(rng, side, rng.uniform())
        v = version if step_versions is None else step_versions[t]
        records.append(rb.step_record(eid, t, v, "metaworld", instruction,
                                      {c: P.pack_array(im) for c, im in zip(CAMERAS, imgs)},
                                      rng.standard_normal(STATE_DIM), rng.uniform(-1, 1, (CHUNK, ACTION_DIM)),
                                      None, False, seed * 1000 + t, now=now + 0.01 * (t + 1)))
    if reward is not None:
        records.append({"kind": rb.KIND_REWARD, "episode_id": eid, "time": now + 1.0, "reward": int(reward)})
    writer.append_many(records)
    return eid


def model_samples(n: int, seed: int = 0, side: int = 32) -> list[Sample]:
    """n Meta-World model samples (raw units) with random images, states and action chunks."""
    rng = np.random.default_rng(seed)
    return [Sample(embodiment="metaworld", images=dict(zip(CAMERAS, frame_images(rng, side, rng.uniform()))),
                   state=rng.standard_normal(STATE_DIM).astype(np.float32),
                   actions=rng.uniform(-1, 1, (CHUNK, ACTION_DIM)).astype(np.float32),
                   action_mask=np.ones(CHUNK, bool), task=TASK, cot=None, kind=K.KIND_ROBOT,
                   conversation=None) for _ in range(n)]


def policy_batch(cfg, policy_cfg, rollout: list[dict], rollout_adv, experts: list[dict] = (), version: int = 0,
                 rollout_version: int | None = None, seed: int = 0):
    """A PolicyBatch of one rollout trajectory (+ expert frames) through merge_batch."""
    import torch

    from syvla.rl.batch import merge_batch
    from syvla.rl.rollouts import RolloutSteps

    m = len(rollout)
    v = version if rollout_version is None else rollout_version
    steps = RolloutSteps(list(rollout), np.zeros(m, np.float32), np.full(m, v, np.int64), [(0, m)], ["ep"])
    return merge_batch(steps, np.asarray(rollout_adv, np.float32), list(experts), None, version, cfg, policy_cfg,
                       torch.Generator().manual_seed(seed))
