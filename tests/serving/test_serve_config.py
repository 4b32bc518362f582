"""cluster/serve_config.yaml deployed the way `serve run`/`serve deploy` do it: in-place weight updates and 503s."""

from __future__ import annotations

import concurrent.futures as cf
import copy
import time
from pathlib import Path

import httpx
import msgpack
import pytest
import yaml
from serving_testlib import act_body, make_obs

from syvla.client import PolicyClient
from syvla.serving import replay_buffer as rb

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "cluster" / "serve_config.yaml"


def deploy(cfg: dict) -> None:
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(cfg))  # what `serve deploy` sends


def wait_version(url: str, version: int, timeout: float = 180.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            meta = httpx.get(url + "/v1/metadata", timeout=10).json()
            if meta.get("policy_version") == version:
                return meta
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"policy_version {version} never served at {url}")


@pytest.fixture(scope="module")
def deployed(serve_http, debug_ckpts, tmp_path_factory):
    from ray import serve

    cfg = yaml.safe_load(CONFIG.read_text())
    app = cfg["applications"][0]
    replay = tmp_path_factory.mktemp("yaml_replay")
    app["args"]["replay_dir"] = str(replay)
    app["args"]["checkpoint"] = str(debug_ckpts[0])
    dep = app["deployments"][0]
    # One tiny replica so that two requests already fill it: back-pressure shows at once.
    dep.update(max_ongoing_requests=1, max_queued_requests=1, ray_actor_options={"num_cpus": 0},
               autoscaling_config={"min_replicas": 1, "max_replicas": 1})
    dep["user_config"] = {"version": 0, "uri": str(debug_ckpts[0])}
    cfg.pop("http_options")  # the proxy already runs on the fixture's free port
    deploy(cfg)
    wait_version(serve_http, 0)
    yield serve_http, cfg, replay
    serve.delete(app["name"])


def test_redeploy_with_new_user_config_swaps_weights_in_place(deployed, debug_ckpts):
    url, cfg, replay = deployed
    writers = {p.name.split(".")[0] for p in rb.ReplayReader(replay).segments()}
    assert len(writers) == 1
    cfg = copy.deepcopy(cfg)
    cfg["applications"][0]["deployments"][0]["user_config"] = {"version": 1, "uri": str(debug_ckpts[1])}
    deploy(cfg)
    meta = wait_version(url, 1)
    assert meta["versions_held"] == [0, 1]  # the same replica, now holding both
    assert {p.name.split(".")[0] for p in rb.ReplayReader(replay).segments()} == writers  # no restart


def test_backpressure_is_503_and_the_client_retries(deployed):
    url, _, _ = deployed
    episode = httpx.post(url + "/v1/episodes", timeout=30).json()["episode_id"]
    body = msgpack.packb(act_body(episode, make_obs(0), seed=0), use_bin_type=True)

    def raw_post(_):
        return httpx.post(url + "/v1/act", content=body, headers={"content-type": "application/msgpack"},
                          timeout=120).status_code

    with cf.ThreadPoolExecutor(20) as pool:  # 20 at once against 1 running + 1 queued
        codes = list(pool.map(raw_post, range(20)))
    assert set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes

    def robot(i):
        with PolicyClient(url, deadline=120, timeout=60) as c:
            c.start_episode()
            obs = make_obs(i)
            return c.act(obs["images"], obs["state"], obs["instruction"]).policy_version

    with cf.ThreadPoolExecutor(6) as pool:
        assert len(list(pool.map(robot, range(6)))) == 6  # retried past the 503s within the deadline


def _serves(url: str, version: int) -> None:
    meta = wait_version(url, version)
    with PolicyClient(url, deadline=120, timeout=60) as c:
        c.start_episode()
        obs = make_obs(3)
        out = c.act(obs["images"], obs["state"], obs["instruction"], seed=1)
    assert out.policy_version == version and out.actions.shape == (meta["chunk_len"], 4)


def test_the_committed_config_serves_the_demo_checkpoint_as_is(serve_http, debug_ckpts, tmp_path):
    """cluster/serve_config.yaml unchanged but for the proxy (the fixture's port) and replica CPUs: its relative
    checkpoint, uri and replay_dir resolve against $SYVLA_ROOT, here a folder laid out as `make demo` leaves it."""
    import shutil

    shutil.copytree(debug_ckpts[0], tmp_path / "checkpoints" / "finetune" / "demo-finetune")
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg.pop("http_options")
    app = cfg["applications"][0]
    app["runtime_env"] = {"env_vars": {"SYVLA_ROOT": str(tmp_path)}}
    app["deployments"][0]["ray_actor_options"] = {"num_cpus": 0}
    deploy(cfg)
    _serves(serve_http, 0)
    assert any((tmp_path / "runs" / "replay").iterdir())  # the relative replay_dir, under the same root


def test_serve_build_writes_a_config_that_serve_deploy_serves(serve_http, debug_ckpts, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "built.yaml"
    serve = str(Path(sys.executable).parent / "serve")
    run = subprocess.run([serve, "build", "syvla.serving.deployment:app", "-o", str(out)], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, SYVLA_SERVE_CHECKPOINT=str(debug_ckpts[1])))
    assert run.returncode == 0, run.stderr[-2000:]
    cfg = yaml.safe_load(out.read_text())
    dep = cfg["applications"][0]["deployments"][0]
    assert dep["user_config"] == {"version": 1, "uri": str(debug_ckpts[1])}
    for key in ("http_options", "grpc_options"):
        cfg.pop(key)
    dep["ray_actor_options"] = {"num_cpus": 0}
    deploy(cfg)
    _serves(serve_http, 1)


def test_build_app_checks_arg_types_before_any_replica():
    from syvla.serving.deployment import build_app

    with pytest.raises(Exception, match="max_batch_size"):
        build_app({"max_batch_size": "eight"})
    with pytest.raises(Exception, match="no_such_field"):
        build_app({"no_such_field": 1})
    bound = build_app({"checkpoint": "checkpoints/finetune/some-run"})._bound_deployment.init_args[0]
    assert bound["checkpoint"] == str(ROOT / "checkpoints" / "finetune" / "some-run")  # against the checkout
