"""A Serve app deployed again under the same name starts from the checkpoint it is given, not from the
versions an earlier deployment of that name published (the weight registry is detached and outlives apps)."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "syvla_redeploy_test"


def _version(url: str) -> int:
    return httpx.get(f"{url}/healthz", timeout=10).json()["policy_version"]


def test_a_second_deployment_does_not_load_the_first_ones_published_weights(serve_http, debug_ckpts, tmp_path):
    from ray import serve

    from syvla.serving.deployment import publish_weights, registry_name
    from syvla.serving.launch import ServeRunConfig, serve_config, serve_policy

    port = int(serve_http.rsplit(":", 1)[1])

    def deploy(replay: str) -> str:
        run = ServeRunConfig(checkpoint=str(debug_ckpts[0]), version=0, app_name=APP, host="127.0.0.1", port=port,
                             replay_dir=str(tmp_path / replay), blocking=False)
        return serve_policy(run, serve_config(run, debug_ckpts[0], 0))

    url = deploy("first")
    publish_weights(APP, debug_ckpts[1], 1, timeout_s=120)
    assert _version(url) == 1
    serve.delete(APP)

    url = deploy("second")
    end = time.monotonic() + 5  # several weight polls: a replica that found v1 in the registry would load it
    while time.monotonic() < end:
        assert _version(url) == 0
        time.sleep(0.5)
    import ray

    ray.get_actor(registry_name(APP), namespace="syvla")  # a fresh registry exists for the new app
    publish_weights(APP, debug_ckpts[1], 1, timeout_s=120)  # and version 1 can be published again
    assert _version(url) == 1
    serve.delete(APP)
