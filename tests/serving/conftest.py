"""Fixtures of the serving tests: debug checkpoints of the real `Policy`."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def debug_ckpts(tmp_path_factory):
    """Two debug checkpoints with different weights: version 0 (seed 0) and version 1 (seed 1)."""
    from syvla.model.policy import make_debug_checkpoint
    from syvla.sim import metaworld as mw

    root = tmp_path_factory.mktemp("ckpts")
    return [make_debug_checkpoint(root / f"v{v}", seed=v, policy_version=v, embodiments=(mw.EMBODIMENT,)) for v in (0, 1)]


@pytest.fixture(scope="module")
def serve_http(ray_local):
    """Serve's HTTP proxy on a free 127.0.0.1 port for one test module; shut down after it."""
    from ray import serve
    from serving_testlib import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
