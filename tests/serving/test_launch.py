"""Which checkpoint pipelines/serve.py serves: explicit, else the newest, else a new debug one (said aloud)."""

from __future__ import annotations

import os
import time

import pytest

from syvla.model.checkpoint import POLICY_VERSION_FILE, newest_checkpoint
from syvla.serving.launch import ServeRunConfig, resolve_checkpoint, serve_config
from syvla.sim import metaworld as mw


def test_newest_checkpoint_and_explicit_one(tmp_path, debug_ckpts):
    import shutil

    root = tmp_path / "checkpoints"
    old, new = root / "run_a" / "step_10", root / "run_b"
    shutil.copytree(debug_ckpts[0], old)
    shutil.copytree(debug_ckpts[1], new)
    past = time.time() - 100
    os.utime(old / POLICY_VERSION_FILE, (past, past))
    assert newest_checkpoint(root) == new and newest_checkpoint(tmp_path / "none") is None
    logs = []
    path, version = resolve_checkpoint(ServeRunConfig(checkpoints_dir=str(root)), log=logs.append)
    assert (path, version) == (new.resolve(), 1) and "newest" in logs[0]
    path, version = resolve_checkpoint(ServeRunConfig(checkpoint=str(old), version=7), log=logs.append)
    assert (path, version) == (old.resolve(), 7)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        resolve_checkpoint(ServeRunConfig(checkpoint=str(tmp_path)))


def test_missing_checkpoint_creates_a_debug_one_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("SYVLA_API_KEY", "from-env")
    logs = []
    cfg = ServeRunConfig(checkpoints_dir=str(tmp_path / "ck"), replay_dir=str(tmp_path / "replay"))
    path, version = resolve_checkpoint(cfg, embodiments=(mw.EMBODIMENT,), log=logs.append)
    assert path == (tmp_path / "ck" / "debug").resolve() and version == 0
    assert "UNTRAINED debug checkpoint" in logs[0]
    server = serve_config(cfg, path, version)
    assert (server.api_key, server.checkpoint, server.replay_dir) == ("from-env", str(path), str(tmp_path / "replay"))
    with pytest.raises(ValueError, match="ServeRunConfig.port"):
        ServeRunConfig(port=0)


def test_deployment_options_have_one_source():
    """cluster/serve_config.yaml states the same Serve options that DeploymentConfig derives."""
    from pathlib import Path

    import yaml

    from syvla.serving.config import DeploymentConfig

    app = yaml.safe_load((Path(__file__).resolve().parents[2] / "cluster" / "serve_config.yaml").read_text())
    app = app["applications"][0]
    dep = {k: v for k, v in app["deployments"][0].items() if k not in ("name", "user_config")}
    assert DeploymentConfig().options(app["args"]["max_batch_size"]) == dep
    fixed = DeploymentConfig(num_replicas=2).options(8)
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert ServeRunConfig().deployment == DeploymentConfig()
    with pytest.raises(ValueError, match="DeploymentConfig.max_replicas"):
        DeploymentConfig(min_replicas=3, max_replicas=2)


@pytest.mark.slow
def test_serve_py_stops_serving_on_sigterm(tmp_path, debug_ckpts):
    """`kill <pid>` (SIGTERM: systemd, a job stop) shuts Serve down as Ctrl-C does, then the script exits 0."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import httpx
    from serving_testlib import free_port

    root = Path(__file__).resolve().parents[2]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "pipelines/serve.py", "--checkpoint", str(debug_ckpts[0]), "--port",
                             str(port), "--replay_dir", str(tmp_path / "replay"), "--deployment.num_replicas", "1",
                             "--deployment.num_cpus", "0"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 300
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < end, "serve.py did not come up"
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "[serve] shutting down" in out, out[-2000:]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
