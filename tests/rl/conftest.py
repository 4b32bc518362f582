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
