import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """RL tests use tiny models that gain nothing from intra-op threads, and on a shared,
    oversubscribed CPU OpenMP's spinning threads make each step ~10x slower. Restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def rl_ckpts(tmp_path_factory):
    """Two debug-preset policy checkpoints with different weights: version 0 (seed 0) and version 1 (seed 1)."""
    from syvla.model.policy import make_debug_checkpoint
    from syvla.sim import metaworld as mw

    root = tmp_path_factory.mktemp("rl_ckpts")
    return [make_debug_checkpoint(root / f"v{v}", seed=v, policy_version=v, embodiments=(mw.EMBODIMENT,)) for v in (0, 1)]


@pytest.fixture(scope="session")
def expert_set():
    """Three Meta-World-shaped demonstrations of 12 frames (the last one failed), chunked to 50."""
    from rl_testlib import expert_table

    from syvla.rl.guidance import ExpertSet

    return ExpertSet.from_tables([expert_table(i, 12, seed=i, success=i < 2) for i in range(3)], chunk_len=50)
