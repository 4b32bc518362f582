"""One full RL iteration through Ray: Serve (2 replicas) -> simulated robots -> replay buffer -> RL actors
(rollout buffer, retriever, value learner, 2 PPO learners with gloo all-reduce) -> publish -> every replica
serves the new version."""

from __future__ import annotations

import socket
import time

import httpx
import numpy as np
import pytest

from syvla.model.checkpoint import read_config
from syvla.rl.config import debug_rl_config
from syvla.rl.fpo import FPOConfig
from syvla.rl.retrieval import RetrievalConfig
from syvla.serving.config import ServeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "syvla_rl_test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(ray_local, rl_ckpts, tmp_path_factory):
    """The debug policy (version 0) on 2 Serve replicas with a replay buffer; torn down after the module."""
    from ray import serve

    from syvla.serving.deployment import policy_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    replay = tmp_path_factory.mktemp("rl_replay")
    cfg = ServeConfig(checkpoint=str(rl_ckpts[0]), version=0, replay_dir=str(replay), weight_poll_s=0.2)
    serve.run(policy_app(cfg, num_replicas=2, ray_actor_options={"num_cpus": 0}), name=APP, route_prefix="/",
              blocking=False)
    end = time.monotonic() + 300
    while (status := serve.status().applications.get(APP)) is None or status.status != "RUNNING":
        assert time.monotonic() < end, f"{APP} not running: {status}"
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}", replay
    serve.delete(APP)
    serve.shutdown()


def test_one_rl_iteration_raises_the_version_on_every_replica(served, rl_ckpts, expert_set, tmp_path):
    import ray

    from syvla.rl.actors import serve_publisher, start_workers, stop_workers
    from syvla.rl.controller import RLController
    from syvla.serving.deployment import get_registry
    from syvla.sim.episodes import Endpoint, EpisodeConfig, evaluate_endpoint

    url, replay = served
    cfg = debug_rl_config(rl_episodes=1, rollouts_per_episode=2, final_eval=False, num_learners=2,
                          collect_timeout_s=120, poll_s=0.2, update_steps=2, minibatch_size=4,
                          fpo=FPOConfig(n_mc=2), retrieval=RetrievalConfig(k=1), value_warmup_steps=3,
                          value_steps=2, actor_cpus=0.0)
    robot_runs = []

    def robots(label, version, n):  # simulated Meta-World robots drive the endpoint and post 0/1 rewards
        summary = evaluate_endpoint(Endpoint(url=url), EpisodeConfig(tasks=("reach-v3",), episodes=n, seed=0,
                                                                     max_steps=50, execute_steps=25, image_size=32))
        robot_runs.append((label, version, summary))

    workers = start_workers(cfg, rl_ckpts[0], replay, expert_set)
    try:
        before = workers.learners.checksums()
        controller = RLController(cfg, workers, tmp_path / "run", rl_ckpts[0], 0, read_config(rl_ckpts[0]),
                                  publish=serve_publisher(APP, timeout_s=180), on_collect=robots)
        state = controller.run()
        after = workers.learners.checksums()
    finally:
        stop_workers(workers)

    (label, version, summary), = robot_runs
    assert (label, version, summary["policy_versions"]) == ("0", 0, [0])
    assert state.version == 1 and state.episode == 1
    assert set(state.rollout_versions["0"].values()) == {0}  # the controller knows each rollout's version
    assert set(state.rollout_versions["0"]) == {ep["episode_id"] for ep in summary["results"]}
    m = state.metrics[0]
    assert m["rollouts"] == 2 and m["rollout_rows"] == 4 and m["expert_rows"] == 4 and m["learners"] == 2
    assert m["ratio_min_first_step"] == pytest.approx(1.0, abs=1e-5) == m["ratio_max_first_step"]
    # gradients all-reduced over gloo: both learners moved, and moved identically
    assert after[0] == after[1] and after[0] != before[0]
    # every replica reports version 1: in the weight registry, and in what it serves
    acks = ray.get(get_registry(APP).acks.remote())
    assert len(acks) == 2 and {v for v, _ in acks.values()} == {1}
    with httpx.Client(timeout=30) as http:
        versions = {http.get(f"{url}/v1/metadata").json()["policy_version"] for _ in range(12)}
        assert versions == {1}


def test_null_update_serves_the_base_actions_bit_for_bit(served, rl_ckpts, expert_set, tmp_path):
    """lr 0 through Ray: the version RL publishes answers every request exactly as its parent did, and
    the endpoint answers exactly as the policy in process."""
    from syvla.client import PolicyClient
    from syvla.model.policy import Policy
    from syvla.rl.actors import serve_publisher, start_workers, stop_workers
    from syvla.rl.controller import RLController
    from syvla.sim.episodes import Endpoint, EpisodeConfig, evaluate_endpoint

    from syvla.model.policy import make_debug_checkpoint
    from syvla.sim import metaworld as mw

    url, replay = served
    publish = serve_publisher(APP, timeout_s=180)
    base_version = 5  # after the first test's versions
    base = make_debug_checkpoint(tmp_path / "v5", seed=3, policy_version=base_version, embodiments=(mw.EMBODIMENT,))
    publish(str(base), base_version)
    samples = [expert_set.sample(r) for r in (0, 7, len(expert_set) - 1)]

    def served_actions(expect_version):
        out = []
        with PolicyClient(url) as client:
            client.start_episode(instruction=samples[0].task)
            for i, s in enumerate(samples):
                r = client.act(s.images, s.state, s.task, seed=100 + i)
                assert r.policy_version == expect_version
                out.append(r.actions)
        return out

    before = served_actions(base_version)
    local = Policy.load(base)
    for i, (s, a) in enumerate(zip(samples, before)):
        mine = local.infer({"embodiment": "metaworld", "images": s.images, "state": s.state, "instruction": s.task,
                            "seed": 100 + i})["actions"]
        assert np.array_equal(mine, a)  # in process == through the endpoint, bit for bit

    cfg = debug_rl_config(rl_episodes=1, rollouts_per_episode=2, final_eval=False, num_learners=1,
                          collect_timeout_s=120, poll_s=0.2, update_steps=2, minibatch_size=4, lr=0.0,
                          fpo=FPOConfig(n_mc=2), retrieval=RetrievalConfig(k=1), value_warmup_steps=3,
                          value_steps=2, actor_cpus=0.0)

    def robots(label, version, n):
        evaluate_endpoint(Endpoint(url=url), EpisodeConfig(tasks=("reach-v3",), episodes=n, seed=0, max_steps=50,
                                                           execute_steps=25, image_size=32))

    workers = start_workers(cfg, base, replay, expert_set)
    try:
        state = RLController(cfg, workers, tmp_path / "run", base, base_version, read_config(base),
                             publish=publish, on_collect=robots).run()
    finally:
        stop_workers(workers)
    assert state.version == base_version + 1 and state.metrics[0]["expert_rows"] > 0
    after = served_actions(base_version + 1)
    for a, b in zip(before, after):
        assert np.array_equal(a, b)


def test_rl_metrics_exporter_sets_prometheus_gauges(ray_local):
    import ray

    from syvla.rl.actors import rl_metrics_exporter

    rl_metrics_exporter("gauges")({"episode": 2, "version": 3, "success_rate": 0.65, "clip_fraction": 0.1})
    port = ray._private.worker.global_worker.node.metrics_export_port
    want = ['ray_syvla_rl_success_rate{', 'ray_syvla_rl_episodes{']
    end, lines = time.monotonic() + 90, []
    while time.monotonic() < end:
        lines = [line for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines()
                 if 'run="gauges"' in line]
        if all(any(line.startswith(w) for line in lines) for w in want):
            break
        time.sleep(2)
    rate = [line for line in lines if line.startswith(want[0])]
    assert rate and 'policy_version="3"' in rate[0] and rate[0].endswith(" 0.65"), lines
