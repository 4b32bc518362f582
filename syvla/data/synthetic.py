"""Synthetic robot episodes in FRAME_SCHEMA, for tests and the data-pipeline benchmark.

Meta-World-like: state = [hand xyz, gripper opening] plus object xyz, action =
[dx, dy, dz, grip] in [-1, 1]; each view is a PNG whose content moves with the
hand, so images differ between frames (as real camera images do) and no frame is
black. Deterministic for a given seed."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from syvla import constants as K
from syvla.data.columns import list_column
from syvla.data.images import encode_png
from syvla.data.schema import FRAME_SCHEMA

VIEWS = ("corner2", "topview", "gripperPOV")


def _render(rng: np.random.Generator, hand: np.ndarray, size: int, view: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = 0.5 + 0.4 * np.tanh(hand[view % 3]), 0.5 + 0.4 * np.tanh(hand[(view + 1) % 3])
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 40.0)
    img = np.stack([64 + 120 * xx, 64 + 120 * yy, 40 + 200 * blob], axis=-1)
    img += rng.integers(0, 8, img.shape)  # sensor noise: PNGs do not collapse to a few bytes
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_episode(
    episode_id: int,
    n_frames: int = 40,
    dataset: str = "synthetic",
    image_size: int = 32,
    views: tuple[str, ...] = VIEWS,
    seed: int = 0,
    success: bool | None = True,
    task: str = "pick up the block",
    fps: float = 10.0,
) -> pa.Table:
    """One robot episode [n_frames rows] in FRAME_SCHEMA."""
    rng = np.random.default_rng([seed, episode_id])
    action = np.clip(np.cumsum(rng.normal(0, 0.3, (n_frames, 4)), axis=0) * 0.3, -1, 1).astype(np.float32)
    action[:, 3] = np.where(np.arange(n_frames) < n_frames // 2, -1.0, 1.0)  # open, then close the gripper
    hand = np.cumsum(action[:, :3] * 0.01, axis=0) + np.array([0.0, 0.6, 0.2])
    obj = np.tile(rng.uniform(-0.1, 0.1, 3), (n_frames, 1))
    state = np.concatenate([hand, (action[:, 3:] < 0).astype(np.float32), obj], axis=1).astype(np.float32)
    images = [[encode_png(_render(rng, hand[t], image_size, v)) for v in range(len(views))] for t in range(n_frames)]
    return pa.Table.from_pydict(
        {
            K.DATASET: [dataset] * n_frames,
            K.EPISODE_ID: np.full(n_frames, episode_id, np.int64),
            K.FRAME_INDEX: np.arange(n_frames, dtype=np.int64),
            K.TIMESTAMP: np.arange(n_frames) / fps,
            K.TASK: [task] * n_frames,
            K.COT: [None] * n_frames,
            K.IMAGE_VIEWS: [list(views)] * n_frames,
            K.IMAGES: images,
            K.STATE: list_column(state),
            K.ACTION: list_column(action),
            K.SUCCESS: [success] * n_frames,
            K.KIND: [K.KIND_ROBOT] * n_frames,
            K.CONVERSATION: [None] * n_frames,
        },
        schema=FRAME_SCHEMA,
    )


def synthetic_vqa(episode_id: int, dataset: str = "vqa", image_size: int = 32, seed: int = 0) -> pa.Table:
    """One VQA row (kind vqa): an image, empty state/action and a two-turn conversation."""
    import json

    rng = np.random.default_rng([seed, episode_id, 7])
    img = encode_png(_render(rng, rng.normal(size=3), image_size, 0))
    turns = [{"role": "user", "content": f"What is in image {episode_id}?"},
             {"role": "assistant", "content": "A red block on a table."}]
    return pa.Table.from_pydict(
        {
            K.DATASET: [dataset], K.EPISODE_ID: [episode_id], K.FRAME_INDEX: [0], K.TIMESTAMP: [0.0],
            K.TASK: ["Describe the image."], K.COT: [None], K.IMAGE_VIEWS: [["image"]], K.IMAGES: [[img]],
            K.STATE: [[]], K.ACTION: [[]], K.SUCCESS: [None], K.KIND: [K.KIND_VQA],
            K.CONVERSATION: [json.dumps(turns)],
        },
        schema=FRAME_SCHEMA,
    )
