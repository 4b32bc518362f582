import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import syvla  # noqa: E402,F401  (installs the torchvision shim before anything imports torchvision)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the whole test session (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        # address="local": always a new instance, never a cluster another process left on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"MUJOCO_GL": os.environ["MUJOCO_GL"]}})
    yield ray
    ray.shutdown()
