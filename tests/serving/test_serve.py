"""The robot API through the real Ray Serve deployment (2 replicas, real debug Policy)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_testlib import ACTION_DIM, CHUNK, act_body, make_obs

from syvla.client import PolicyClient, PolicyServerError
from syvla.model.policy import Policy
from syvla.serving import protocol as P
from syvla.serving import replay_buffer as rb
from syvla.serving.config import ServeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "syvla_test"
KEY = "k3y"
SECRET = "episode-secret"  # the app's episode-id key, so tests can sign ids of their own
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app(serve_http, debug_ckpts, tmp_path_factory):
    from ray import serve

    from syvla.serving.deployment import policy_app

    replay = tmp_path_factory.mktemp("serve_replay")
    cfg = ServeConfig(checkpoint=str(debug_ckpts[0]), version=0, replay_dir=str(replay), api_key=KEY,
                      episode_secret=SECRET, max_body_bytes=2_000_000, weight_poll_s=0.2)
    serve.run(policy_app(cfg, num_replicas=2, ray_actor_options={"num_cpus": 0}), name=APP, route_prefix="/",
              blocking=False)
    _wait_ready(serve_http)
    yield serve_http, replay
    serve.delete(APP)


def _wait_ready(url: str, timeout: float = 180.0) -> None:
    from ray import serve

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = serve.status().applications.get(APP)
        if status is not None and status.status == "RUNNING":
            return
        time.sleep(0.5)
    raise TimeoutError(f"{APP} not running: {serve.status()}")


@pytest.fixture(scope="module")
def policies(debug_ckpts):
    return [Policy.load(c) for c in debug_ckpts]


@pytest.mark.parametrize("encoding", P.ENCODINGS)
def test_act_round_trip(app, policies, encoding):
    url, _ = app
    with PolicyClient(url, api_key=KEY, encoding=encoding) as c:
        assert c.healthz()["status"] == "ok"
        c.start_episode(instruction="pick up the puck")
        obs = make_obs(2)
        out = c.act(obs["images"], obs["state"], obs["instruction"], seed=4)
        assert out.actions.shape == (CHUNK, ACTION_DIM) and out.policy_version == 0
        expected = policies[0].infer({**obs, "embodiment": "metaworld", "seed": 4})["actions"]
        np.testing.assert_allclose(out.actions, expected, rtol=1e-4, atol=1e-5)
        c.post_reward(1)


def test_auth_and_size_limit(app):
    url, _ = app
    assert httpx.get(url + "/v1/metadata").status_code == 401
    assert httpx.get(url + "/v1/metadata", headers={"x-api-key": KEY}).status_code == 200
    big = httpx.post(url + "/v1/act", content=b"\0" * 3_000_000,
                     headers={"x-api-key": KEY, "content-type": "application/msgpack"})
    assert big.status_code == 413


def test_stalled_uploads_do_not_block_health_through_serve(app):
    """100 clients promise a 1000-byte act body and send 10 bytes: Serve's proxy hands each to a replica,
    whose app turns away all but max_slow_uploads of them within upload_grace_s, so /healthz gets through."""
    import socket
    from urllib.parse import urlparse

    url, _ = app
    port = urlparse(url).port
    socks = []
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"POST /v1/act HTTP/1.1\r\nHost: robot\r\nx-api-key: {KEY}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode() + b'{"episode"')
        socks.append(s)
    try:
        time.sleep(0.5)
        times = []
        for _ in range(6):
            t0 = time.monotonic()
            assert httpx.get(url + "/healthz", timeout=10).status_code == 200
            times.append(time.monotonic() - t0)
            time.sleep(0.2)
    finally:
        for s in socks:
            s.close()
    # Blocked, a health check would wait out body_timeout_s (10 s); a loaded 2-core machine can take a second.
    assert max(times) < 3.0, times


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["state", "images", "embodiment", "seed", "episode_id", "instruction"]),
       value=st.one_of(st.none(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=5),
                       st.binary(max_size=10), st.lists(st.floats(allow_nan=True), max_size=40)),
       garbage=st.binary(max_size=30))
def test_fuzz_through_serve(app, field, value, garbage):
    url, _ = app
    headers = {"x-api-key": KEY, "content-type": "application/msgpack"}
    body = act_body(P.make_episode_id("0" * 32, 0, SECRET.encode()), make_obs(0, side=8), seed=1)
    body[field] = value
    for content in (msgpack.packb(body, use_bin_type=True), garbage):
        r = httpx.post(url + "/v1/act", content=content, headers=headers, timeout=60)
        assert r.status_code < 500, (r.status_code, r.content[:200])


def test_weight_swap_under_continuous_requests(app, policies, debug_ckpts):
    """Robots keep acting while version 1 is published: no failure, no mixed episode, no mislabeled chunk."""
    from syvla.serving.deployment import publish_weights

    url, replay = app
    obs = {**make_obs(5), "embodiment": "metaworld", "seed": 9}
    expected = {v: p.infer(obs)["actions"] for v, p in enumerate(policies)}
    assert not np.allclose(expected[0], expected[1])
    results, errors, stop = [], [], threading.Event()
    published_at = []

    def robot():
        with PolicyClient(url, api_key=KEY, deadline=120, timeout=60) as c:
            while not stop.is_set():
                try:
                    eid = c.start_episode()
                    started = time.monotonic()
                    for _ in range(3):
                        out = c.act(obs["images"], obs["state"], obs["instruction"], seed=9)
                        results.append((eid, started, out.policy_version, out.actions))
                except Exception as exc:  # noqa: BLE001 - every failure is a test failure, recorded
                    errors.append(repr(exc))

    threads = [threading.Thread(target=robot) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        publish_weights(APP, debug_ckpts[1], 1, timeout_s=120)
        published_at.append(time.monotonic())
        end = time.monotonic() + 120
        while time.monotonic() < end and not any(s > published_at[0] and v == 1 for _, s, v, _ in results):
            time.sleep(0.2)
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert errors == []
    by_episode: dict[str, set] = {}
    for eid, started, version, actions in results:
        # The chunk is exactly what the stamped version's weights give: never a half-loaded or other model.
        np.testing.assert_allclose(actions, expected[version], rtol=1e-4, atol=1e-5)
        assert version == P.parse_episode_id(eid, SECRET.encode())
        by_episode.setdefault(eid, set()).add(version)
        if started > published_at[0]:
            assert version == 1  # episodes started after publish_weights returned run the new weights
    assert all(len(v) == 1 for v in by_episode.values())
    assert {v for vs in by_episode.values() for v in vs} == {0, 1}
    # Every acknowledged chunk is in the replay buffer, on its episode's version.
    episodes = rb.ReplayReader(replay).episodes(decode=False)
    recorded = {(e.episode_id, s["policy_version"]) for e in episodes.values() for s in e.steps}
    assert {(eid, v) for eid, _, v, _ in results} <= recorded
    assert all(len(e.policy_versions) <= 1 for e in episodes.values())


def test_client_retries_until_deadline_when_server_is_unreachable():
    with PolicyClient("http://127.0.0.1:9", deadline=0.5, backoff_s=0.05) as c:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            c.healthz()
        assert 0.4 < time.monotonic() - t0 < 5


def test_unknown_pinned_version_is_409(app):
    url, _ = app
    with PolicyClient(url, api_key=KEY) as c:
        obs = make_obs(0)
        with pytest.raises(PolicyServerError) as err:
            c.act(obs["images"], obs["state"], obs["instruction"], episode_id=P.make_episode_id("1" * 32, 77, SECRET.encode()))
        assert (err.value.status, err.value.field) == (409, "episode_id")


def test_sim_robot_episode_through_the_endpoint(app):
    """A Meta-World robot drives the endpoint: chunks executed, 0/1 reward posted, episode in the replay buffer."""
    from syvla.sim.episodes import Endpoint, EpisodeConfig, evaluate_endpoint

    url, replay = app
    cfg = EpisodeConfig(tasks=("reach-v3",), episodes=1, seed=0, max_steps=60, execute_steps=25, image_size=32)
    summary = evaluate_endpoint(Endpoint(url=url, api_key=KEY), cfg)
    (ep,) = summary["results"]
    assert ep["steps"] == 60 or ep["success"]
    assert ep["chunks"] == -(-ep["steps"] // 25) and summary["per_task"].keys() == {"reach-v3"}
    recorded = rb.ReplayReader(replay).episodes(decode=False)[ep["episode_id"]]
    assert recorded.reward == int(ep["success"]) and len(recorded.steps) == ep["chunks"]
    assert recorded.instruction == "reach the red goal position"


def test_the_documented_real_time_commands_through_the_endpoint(app, tmp_path):
    """docs/serving.md's real-time chunking commands, against the served policy: `sim_robot.py --realtime
    rtc` and `evaluate.py --endpoint URL --realtime rtc` run their episodes and report them."""
    sys.path.insert(0, str(ROOT / "pipelines"))
    import evaluate
    import sim_robot

    url, replay = app
    small = ["--tasks", "reach-v3", "--episodes", "1", "--max_steps", "30", "--image_size", "32",
             "--realtime", "rtc", "--execute_steps", "10"]
    assert sim_robot.main(["--url", url, "--api_key", KEY, "--robots", "1", "--json_out", str(tmp_path / "r.json"),
                           *small]) == 0
    (ep,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert ep["steps"] == 30 or ep["success"]
    assert evaluate.main(["--endpoint", url, "--api_key", KEY, "--json", str(tmp_path / "e.json"), *small]) == 0
    (ep,) = json.loads((tmp_path / "e.json").read_text())["closed_loop"]["results"]
    assert ep["steps"] == 30 or ep["success"]
    assert ep["episode_id"] in rb.ReplayReader(replay).episodes(decode=False)


def test_replicas_export_prometheus_metrics(app):
    """What the replicas report reaches Ray's Prometheus endpoint of the node (exported as ray_syvla_*)."""
    import ray

    url, _ = app
    with PolicyClient(url, api_key=KEY) as c:
        c.start_episode()
        obs = make_obs(6)
        c.act(obs["images"], obs["state"], obs["instruction"], seed=2)
    httpx.get(url + "/v1/nope", headers={"x-api-key": KEY})
    port = ray._private.worker.global_worker.node.metrics_export_port
    want = ('ray_syvla_requests_total{', 'route="/v1/act"', 'status="200"'), \
           ('ray_syvla_requests_total{', 'route="unknown"', 'status="404"'), \
           ('ray_syvla_act_ms_bucket{', 'part="infer"'), ('ray_syvla_policy_version{',), ('ray_syvla_replay_bytes{',)
    end, missing = time.monotonic() + 90, want
    while missing and time.monotonic() < end:
        lines = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines()
        missing = [w for w in want if not any(all(p in line for p in w) and 'app="syvla_test"' in line
                                               for line in lines)]
        time.sleep(2)
    assert not missing, missing


def test_robots_ride_through_a_replica_kill(app):
    """A replica process killed while 4 robots act: every act returns (the client retries the proxy's plain
    500s and dropped connections), none waits for the restart."""
    import ray

    url, _ = app
    stop, latencies, errors = threading.Event(), [], []

    def robot(i: int) -> None:
        try:
            with PolicyClient(url, api_key=KEY, deadline=60, timeout=30, backoff_s=0.05) as c:
                c.start_episode()
                obs = make_obs(i, side=8)
                while not stop.is_set():
                    t0 = time.monotonic()
                    c.act(obs["images"], obs["state"], obs["instruction"])
                    latencies.append(time.monotonic() - t0)
        except Exception as exc:  # noqa: BLE001 (any failure is the finding)
            errors.append(repr(exc))

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == "serve" and a["name"].startswith(f"SERVE_REPLICA::{APP}#")]
    assert len(names) == 2, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)  # the process dies, as with kill -9
    killed_at = len(latencies)
    time.sleep(8)
    stop.set()
    for t in threads:
        t.join(120)
    assert errors == [] and len(latencies) > killed_at + 8, (errors, len(latencies), killed_at)
    # An episode pinned to version 0 continues on the surviving replica: no act waited for the restart.
    assert max(latencies[killed_at:]) < 15, sorted(latencies)[-5:]
