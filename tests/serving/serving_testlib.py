"""Helpers shared by the serving tests (observations of the debug Meta-World embodiment)."""

from __future__ import annotations

import contextlib
import threading
import time

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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def act_body(episode_id: str, obs: dict, seed: int | None = None) -> dict:
    """A msgpack-ready /v1/act body with raw image arrays."""
    from syvla.serving import protocol as P

    return {"episode_id": episode_id, "embodiment": "metaworld", "instruction": obs["instruction"],
            "images": {k: P.pack_array(v) for k, v in obs["images"].items()}, "state": P.pack_array(obs["state"]),
            "seed": seed}


@contextlib.contextmanager
def uvicorn_server(app, **config):
    """`app` over real sockets: uvicorn in a daemon thread on a free 127.0.0.1 port; yields (url, port)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < end, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(10)
