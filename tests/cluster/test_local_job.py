"""cluster/local_job.sh as a user runs it: a fresh head with token auth, a job through `ray job submit`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def test_local_job_runs_a_pipeline_on_a_token_protected_head():
    import shutil
    import tempfile

    temp = Path(tempfile.mkdtemp(prefix="syvla-lj-", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    env = dict(os.environ, SYVLA_RAY_PORT="6391", SYVLA_DASHBOARD_PORT="8291", SYVLA_AGENT_PORT="52391",
               SYVLA_RAY_TEMP_DIR=str(temp), SYVLA_NUM_CPUS="1",
               VENV=str(Path(sys.executable).parents[1]), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    ray = str(Path(sys.executable).parent / "ray")
    try:
        job = subprocess.run(["cluster/local_job.sh", "pipelines/pretrain.py", "--help"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "usage: pretrain.py" in job.stdout and "succeeded" in job.stdout + job.stderr
        # The head refuses clients without the token, and with a wrong one.
        for auth in ({"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "wrong"}):
            denied = subprocess.run([ray, "job", "list", "--address", "http://127.0.0.1:8291"], env={**env, **auth},
                                    capture_output=True, text=True, timeout=120)
            assert denied.returncode != 0 and "token" in denied.stdout + denied.stderr, auth
    finally:
        subprocess.run(["pkill", "-f", str(temp)], check=False)
        shutil.rmtree(temp, ignore_errors=True)
