"""Helpers shared by the serving tests (observations of the debug Meta-World embodiment)."""

from __future__ import annotations

import numpy as np

CAMERAS = ("corner2", "topview", "gripperPOV")  # the debug preset's Meta-World rig
STATE_DIM, ACTION_DIM, CHUNK = 39, 4, 50


def make_obs(seed: int = 0, side: int = 32) -> dict:
    """A Meta-World observation with small random images (fixed seed)."""
    rng = np.random.default_rng(seed)
    return {
        "images": {c: rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for c in CAMERAS},
        "state": rng.standard_normal(STATE_DIM).astype(np.float32),
        "instruction": "pick up the puck",
    }
