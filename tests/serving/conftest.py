"""Fixtures of the serving tests: debug checkpoints of the real `Policy`."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def debug_ckpts(tmp_path_factory):
    """Two debug checkpoints with different weights: version 0 (seed 0) and version 1 (seed 1)."""
    from syvla.model.policy import make_debug_checkpoint

    root = tmp_path_factory.mktemp("ckpts")
    return [make_debug_checkpoint(root / f"v{v}", seed=v, policy_version=v) for v in (0, 1)]
