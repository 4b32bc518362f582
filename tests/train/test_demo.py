"""The README's main job (`make demo` = pipelines/demo.py) end to end at toy size, in a fresh folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_every_stage_and_reports_heldout_success_with_intervals(tmp_path):
    cmd = [sys.executable, str(ROOT / "pipelines" / "demo.py"), "--episodes_per_task", "2", "--pretrain_steps", "2",
           "--finetune_steps", "2", "--retriever_steps", "2", "--rl_episodes", "1", "--rl_rollouts", "2", "--eval_episodes", "3",
           "--num_cpus", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "demo" / "summary.json").read_text())
    assert summary["task"] == "push-v3"
    assert list(summary["stage_seconds"]) == ["collect demos", "pretrain", "fine-tune", "retriever",
                                              "serve + robots + RL", "held-out evaluation"]
    assert (tmp_path / "checkpoints" / "retriever" / "demo-push-v3.pt").is_file()  # RL retrieved with it
    before, after = summary["success_before"], summary["success_after"]
    assert (before["version"], after["version"]) == (0, 1)
    assert before["success"]["n"] == after["success"]["n"] == 3 and 0 <= before["success"]["low"] <= 1
    evaluated = json.loads((tmp_path / "runs" / "demo" / "heldout_eval.json").read_text())
    seeds = [r["seed"] for r in evaluated["before"]["results"]]
    assert seeds == [r["seed"] for r in evaluated["after"]["results"]] == [100_000, 100_001, 100_002]
    assert summary["paired"]["n"] == 3
    assert (tmp_path / "runs" / "demo" / "summary.png").stat().st_size > 0
    assert "held-out layouts" in out.stdout and "CI" in out.stdout
