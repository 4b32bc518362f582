import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# One OpenMP thread per test process, set before torch loads. The tests run the tiny debug model
# from several Python threads at once (robots + server in one process); with an OpenMP team per
# calling thread on 2 shared cores, team threads spun for 20+ minutes of CPU each and the run
# hung (seen in CI and reproduced here). One thread costs these tiny models nothing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The same for the BLAS libraries' own pools (numpy's OpenBLAS, MKL): two threads of one test process
# were seen spinning for minutes again in tests/serving/test_app.py with OpenMP at one thread.
for _blas in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas, "1")

import syvla  # noqa: E402,F401  (installs the torchvision shim before anything imports torchvision)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the whole test session (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        # address="local": always a new instance, never a cluster another process left on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {k: os.environ[k] for k in ("MUJOCO_GL", "OMP_NUM_THREADS",
                                                                     "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}})
    yield ray
    ray.shutdown()
