"""Multi-node behaviour on one machine: a Ray cluster of three raylets (ray.cluster_utils.Cluster).

- data preparation (the prepare stage's Ray Data passes) runs its tasks on several nodes;
- a 2-worker Ray Train run of the project's trainer with placement_strategy SPREAD puts its
  workers on 2 nodes (PACK, the default, keeps them on one);
- the Serve app, with the autoscaling options of cluster/serve_config.yaml made quick, scales
  replicas up under concurrent robots and back down when they stop; its proxy binds 127.0.0.1.

Where tasks and actors ran comes from Ray's state API (the head's dashboard, on 127.0.0.1).
The cluster is this module's own: the session's `ray_local` Ray is shut down first, and Ray is
left shut down at the end.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NODES = 3  # head + 2 workers, 1 CPU each


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    import ray
    import ray._private.utils
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()  # the session's single-node Ray: this module needs a cluster of its own
    with pytest.MonkeyPatch.context() as mp:
        # Cluster would record its address in /tmp/ray/ray_current_cluster, where any other
        # ray.init() on this machine looks for a cluster to join; this one is the test's alone.
        mp.setattr(ray._private.utils, "write_ray_address", lambda *a, **k: None)
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": _free_port()})
    try:
        for _ in range(NODES - 1):
            c.add_node(num_cpus=1)
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == NODES
        c.state_api = f"http://{c.head_node.webui_url}"
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _wait_for(fetch, done, timeout: float, what: str):
    """Poll `fetch()` until `done(value)`; Ray's task/actor events reach the state API within seconds."""
    end = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: last value {value}")
        time.sleep(1.0)


def _map_task_nodes(address: str) -> dict[str, list[str]]:
    """{Ray Data map operator: node ids of its finished tasks}."""
    from ray.util.state import list_tasks

    out: dict[str, list[str]] = {}
    for t in list_tasks(address=address, filters=[("state", "=", "FINISHED")], limit=10_000, detail=True,
                        raise_on_missing_output=False):
        if t.name.startswith("MapBatches(") and t.node_id:
            out.setdefault(t.name, []).append(t.node_id)
    return out


def _actor_nodes(address: str, class_needle: str) -> dict[str, str]:
    from ray.util.state import list_actors

    actors = list_actors(address=address, limit=10_000, detail=True, raise_on_missing_output=False)
    return {a.actor_id: a.node_id for a in actors if class_needle in (a.class_name or "") and a.node_id}


# ---- data ----------------------------------------------------------------------------------
def test_prepare_stage_spreads_over_nodes(cluster, tmp_path):
    import json

    from syvla.data.lerobot import LeRobotWriteOptions, write_lerobot
    from syvla.data.prepare import PrepareConfig, prepare
    from syvla.data.prepared import MANIFEST_FILE
    from syvla.data.synthetic import synthetic_episode

    episodes, frames = 6, 20
    raw = write_lerobot([synthetic_episode(i, frames, dataset="metaworld", image_size=16) for i in range(episodes)],
                        tmp_path / "raw", LeRobotWriteOptions(video=False))
    # block_frames = one episode: six read tasks (pass 1) and six clean/chunk tasks (pass 2)
    result = prepare(PrepareConfig(inputs=(f"metaworld={raw}",), output=str(tmp_path / "prepared"), chunk_len=8,
                                   block_frames=frames))
    manifest = json.loads((tmp_path / "prepared" / MANIFEST_FILE).read_text())
    assert manifest["datasets"]["metaworld"]["frames"] == episodes * frames == result.frames_out
    assert "metaworld" in result.norm_stats.to_dict()

    # The per-unit passes (one task per read unit / cached block: read+summarize, clean+chunk+write)
    # are the Ray Data map operators with at least one task per episode.
    passes = _wait_for(lambda: {name: nodes for name, nodes in _map_task_nodes(cluster.state_api).items()
                                if len(nodes) >= episodes},
                       lambda d: len(d) >= 2, 60, "two per-unit map passes")
    for name, nodes in passes.items():
        assert len(set(nodes)) >= 2, f"{name} ran on one node only: {nodes}"


# ---- training --------------------------------------------------------------------------------
def _train_inputs(tmp_path: Path, name: str, placement: str):
    import ray

    from syvla.data.chunking import add_chunks
    from syvla.data.stats import norm_stats_exact
    from syvla.data.synthetic import VIEWS, synthetic_episode
    from syvla.model.config import ActionExpertConfig, EmbodimentConfig, debug_config
    from syvla.train.config import ScaleConfig, preset

    chunk = 8
    table = add_chunks(pa.concat_tables([synthetic_episode(i, n_frames=16) for i in range(3)]), chunk)
    model = debug_config(embodiments=(EmbodimentConfig("synthetic", state_dim=7, action_dim=4, cameras=VIEWS),),
                         expert=ActionExpertConfig(chunk_len=chunk), num_query_tokens=4)
    cfg = dataclasses.replace(
        preset("pretrain-debug"), name=name, storage_path=str(tmp_path / "runs"), model=model, global_batch_size=4,
        max_steps=2, checkpoint_every=2, log_every=1,
        scale=ScaleConfig(num_workers=2, cpus_per_worker=0.5, max_failures=0, placement_strategy=placement))
    return cfg, {"train": ray.data.from_arrow(table)}, norm_stats_exact(table)


@pytest.mark.parametrize("placement, nodes", [("SPREAD", 2), ("PACK", 1)])
def test_training_workers_follow_placement_strategy(cluster, tmp_path, placement, nodes):
    from syvla.train import ray_train

    before = set(_actor_nodes(cluster.state_api, "RayTrainWorker"))
    cfg, datasets, stats = _train_inputs(tmp_path, f"multinode-{placement.lower()}", placement)
    result = ray_train.fit(cfg, datasets, stats)
    assert result.error is None and result.metrics["step"] == 2
    workers = _wait_for(lambda: {a: n for a, n in _actor_nodes(cluster.state_api, "RayTrainWorker").items()
                                 if a not in before}, lambda d: len(d) >= 2, 60, "this run's RayTrainWorker actors")
    assert len(workers) == 2 and len(set(workers.values())) == nodes, workers


# ---- serving ---------------------------------------------------------------------------------
def _quick_autoscaling_options() -> dict:
    """The deployment options of cluster/serve_config.yaml with delays and targets small enough for a test."""
    cfg = yaml.safe_load((ROOT / "cluster" / "serve_config.yaml").read_text())
    dep = dict(cfg["applications"][0]["deployments"][0])
    for key in ("name", "user_config"):
        dep.pop(key)
    dep["autoscaling_config"] = dict(dep["autoscaling_config"], min_replicas=1, max_replicas=2,
                                     target_ongoing_requests=1, upscale_delay_s=1, downscale_delay_s=2,
                                     look_back_period_s=2, metrics_interval_s=0.5)
    dep["ray_actor_options"] = {"num_cpus": 1}  # one replica per 1-CPU node
    dep["health_check_period_s"] = 2
    return dep


def test_serve_scales_replicas_up_under_load_and_down_after(cluster, tmp_path):
    import psutil
    from ray import serve

    from syvla.client import PolicyClient
    from syvla.model.policy import make_debug_checkpoint
    from syvla.sim import metaworld as mw
    from syvla.serving.config import ServeConfig
    from syvla.serving.deployment import DEPLOYMENT_NAME, policy_app

    app_name, port = "syvla_scale", _free_port()
    ckpt = make_debug_checkpoint(tmp_path / "ckpt", seed=0, embodiments=(mw.EMBODIMENT,))
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    try:
        config = ServeConfig(checkpoint=str(ckpt), version=0, replay_dir="", weight_poll_s=0)
        serve.run(policy_app(config, **_quick_autoscaling_options()), name=app_name, route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}"

        def replicas() -> dict:
            app = serve.status().applications.get(app_name)
            return dict(app.deployments[DEPLOYMENT_NAME].replica_states) if app and app.deployments else {}

        def app_status():
            app = serve.status().applications.get(app_name)
            return app.status if app else None

        _wait_for(app_status, lambda s: s == "RUNNING", 300, "app RUNNING")
        assert replicas().get("RUNNING") == 1

        # The proxy listens on loopback only.
        listening = [c.laddr.ip for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listening and set(listening) == {"127.0.0.1"}, listening

        with PolicyClient(url) as probe:
            meta = probe.metadata()
        embodiment, spec = next(iter(meta["embodiments"].items()))
        rng = np.random.default_rng(0)
        images = {cam: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for cam in spec["cameras"]}
        state = rng.standard_normal(spec["state_dim"]).astype(np.float32)

        stop, served, errors = threading.Event(), [], []

        def robot():
            with PolicyClient(url, timeout=60, deadline=120) as client:
                client.start_episode(embodiment=embodiment)
                while not stop.is_set():
                    try:
                        served.append(client.act(images, state, "reach the goal", embodiment=embodiment).policy_version)
                    except Exception as e:  # noqa: BLE001 - recorded and asserted below
                        errors.append(repr(e))
                        return

        timeline = []
        threads = [threading.Thread(target=robot, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            up = _wait_for(lambda: timeline.append(replicas()) or timeline[-1], lambda r: r.get("RUNNING", 0) >= 2,
                           240, "a second replica under load")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)
        assert not errors, errors[:3]
        assert served and set(served) == {0}
        replica_nodes = _wait_for(lambda: _actor_nodes(cluster.state_api, f"ServeReplica:{app_name}"),
                                  lambda d: len(d) >= 2, 60, "replica actors")
        down = _wait_for(lambda: timeline.append(replicas()) or timeline[-1],
                         lambda r: r.get("RUNNING", 0) == 1 and sum(r.values()) == 1, 240, "back to one replica")
        assert up["RUNNING"] == 2 and down == {"RUNNING": 1}, timeline
        assert len(set(replica_nodes.values())) >= 2, replica_nodes  # the two replicas ran on two nodes
    finally:
        serve.shutdown()
