"""The README's "Scaling to a cluster" block as a user runs it: a fresh token-protected head, the main job
through `ray job submit --working-dir .`, outputs that outlive the job, and `ray job logs` that print each
line once. Only ports, the temp dir, HOME (so ~ and the token are the test's own) and the job's size differ."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))  # every interface: Ray's agent binds the node's address, not loopback
        return s.getsockname()[1]


SMALL = ("--name readme-job --max_steps 4 --log_every 2 --checkpoint_every 2 --global_batch_size 8 "
         "--scale.num_workers 1 --demos.tasks reach-v3 --demos.episodes_per_task 2")


def readme_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Scaling to a cluster"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_cluster_commands_run_as_written():
    PORT, DASHBOARD, AGENT = (_free_port() for _ in range(3))  # a head that just stopped may still hold fixed ones
    lines = readme_block()
    assert lines == ["source .venv/bin/activate", "ray get-auth-token --generate", "export RAY_AUTH_MODE=token",
                     "ray start --head --dashboard-host 127.0.0.1",
                     "ray job submit --address http://127.0.0.1:8265 --working-dir . -- python pipelines/pretrain.py",
                     "ls ~/syvla/checkpoints/pretrain/", "ray stop"], lines
    home = Path(tempfile.mkdtemp(prefix="syvla-rj-", dir="/tmp"))  # short: Ray's socket paths stay < 108 bytes
    venv_bin = Path(sys.executable).parent
    script = "\n".join([
        "set -euo pipefail",
        f"export PATH={venv_bin}:$PATH",  # = source .venv/bin/activate
        lines[1], lines[2],
        f"{lines[3]} --port {PORT} --dashboard-port {DASHBOARD} --dashboard-agent-listen-port {AGENT} "
        f"--temp-dir {home}/ray --num-cpus 2 --disable-usage-stats",
        f"{lines[4].replace('8265', str(DASHBOARD))} {SMALL}",
        lines[5],
    ])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SYVLA_"))}
    env["HOME"] = str(home)
    try:
        run = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-4000:]
        # The job's outputs are under ~/syvla, not in Ray's deleted copy of the working dir.
        assert "relative paths resolve under" in out and (home / "syvla" / "checkpoints" / "pretrain" / "readme-job").is_dir()
        assert "readme-job" in run.stdout.splitlines()[-1]  # what `ls` printed
        job_id = re.search(r"raysubmit_\w+", out).group(0)
        logs = subprocess.run(["ray", "job", "logs", "--address", f"http://127.0.0.1:{DASHBOARD}", job_id],
                              env={**env, "PATH": f"{venv_bin}:{env['PATH']}", "RAY_AUTH_MODE": "token"},
                              capture_output=True, text=True, timeout=120)
        assert logs.returncode == 0, logs.stderr[-2000:]
        steps = [line for line in logs.stdout.splitlines() if re.search(r"step \d+/4 \|", line)]
        assert len(steps) == 2 and len(set(steps)) == 2, steps  # log_every 2 of 4 steps: each line once
        assert "\x1b[A" not in logs.stdout and "\r" not in logs.stdout  # no progress-bar redraws in a job log
        assert "Reporting training result" not in logs.stdout  # Ray Train's per-report metrics dicts
    finally:
        subprocess.run(["pkill", "-f", str(home / "ray")], check=False)
        shutil.rmtree(home, ignore_errors=True)
