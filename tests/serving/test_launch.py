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


def _serve_py(tmp_path, checkpoint, *flags, env=None):
    """`pipelines/serve.py` on a free port as a child process; returns (process, URL) once /healthz answers."""
    import subprocess
    import sys
    from pathlib import Path

    import httpx
    from serving_testlib import free_port

    root = Path(__file__).resolve().parents[2]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "pipelines/serve.py", "--checkpoint", str(checkpoint), "--port", str(port),
                             "--replay_dir", str(tmp_path / "replay"), "--deployment.num_replicas", "1",
                             "--deployment.num_cpus", "0", *flags], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 300
    try:
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            assert time.monotonic() < end, f"serve.py {' '.join(flags)} did not come up"
            time.sleep(1)
    except BaseException:
        proc.kill()
        raise


@pytest.mark.slow
def test_serve_py_stops_serving_on_sigterm(tmp_path, debug_ckpts):
    """`kill <pid>` (SIGTERM: systemd, a job stop) shuts Serve down as Ctrl-C does, then the script exits 0."""
    import signal

    import httpx

    proc, url = _serve_py(tmp_path, debug_ckpts[0])
    try:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "[serve] shutting down" in out, out[-2000:]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/healthz", timeout=2)


def test_ingress_is_checked_against_the_cluster(ray_local):
    """A typo is refused at parse time; an ingress the running cluster was not started with is refused
    before anything deploys (Serve reads it when the cluster starts, so it cannot be switched later)."""
    from syvla.serving.launch import check_ingress

    with pytest.raises(ValueError, match="ServeRunConfig.ingress must be one of"):
        ServeRunConfig(ingress="nginx")
    assert os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "0") == "0", "the test session's cluster uses the proxy"
    check_ingress(ServeRunConfig(ingress="proxy"))
    with pytest.raises(ValueError, match="started for the 'proxy' ingress.*RAY_SERVE_ENABLE_HA_PROXY=1"):
        check_ingress(ServeRunConfig(ingress="haproxy"))


@pytest.mark.slow
def test_serve_py_behind_haproxy_answers_acts_and_refusals(tmp_path, debug_ckpts):
    """`--ingress haproxy` starts a local cluster behind Serve's HAProxy ingress: acts, our error bodies and
    the replay buffer work through it, and SIGTERM still shuts down cleanly."""
    import signal

    import httpx
    import numpy as np

    from syvla.client import PolicyClient
    from syvla.serving.replay_buffer import ReplayReader

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_SERVE_ENABLE_HA_PROXY")}
    proc, url = _serve_py(tmp_path, debug_ckpts[0], "--ingress", "haproxy", env=env)
    try:
        assert "haproxy" in _process_names(), "no HAProxy process serves the port"
        rng = np.random.default_rng(0)
        images = {c: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for c in mw.CAMERAS}
        with PolicyClient(url, timeout=60) as client:
            client.start_episode()
            out = client.act(images, rng.standard_normal(mw.STATE_DIM).astype(np.float32), "push the puck", seed=1)
            assert out.actions.shape[1] == mw.ACTION_DIM and np.isfinite(out.actions).all()
            client.post_reward(1)
        bad = httpx.post(f"{url}/v1/act", content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "error" in bad.json(), bad.text
        proc.send_signal(signal.SIGTERM)
        out_text, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "[serve] shutting down" in out_text, out_text[-2000:]
    (episode,) = ReplayReader(tmp_path / "replay").episodes().values()
    assert (len(episode.steps), episode.reward) == (1, 1), episode


def _process_names() -> set[str]:
    from pathlib import Path

    names = set()
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            names.add(comm.read_text().strip())
        except OSError:  # the process ended while we looked
            pass
    return names
