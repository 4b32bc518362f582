"""Ray at the edge of RL (App. A "RL Infra"): thin actor wrappers over the plain RL components, the
learner process group, and the weight broadcast to Serve.

    workers = start_workers(cfg, checkpoint, replay_dir, experts)     # after ray.init
    controller = RLController(cfg, workers, run_dir, checkpoint, version, policy_cfg,
                              publish=serve_publisher("syvla"))
    controller.run()

Actors (each subclasses its library class and adds nothing but placement):
    RolloutBuffer   RolloutCollector over the Serve replay directory
    Retriever       SampleRetriever: the expert set pre-encoded by CLIP, top-k per rollout step
    ValueLearner    ValueTrainer: Monte-Carlo warm-up, V(s), fit on lambda-returns
    PPOLearner      PolicyLearner x N, one torch.distributed group (gloo on CPU, NCCL on GPU):
                    rank 0 tells the others its node address and a free port; gradients are
                    all-reduced every step, so the N weight copies stay identical
The controller talks to them through `SyncActor` proxies (a method call = ray.get of
the remote call), the same methods it calls on in-process objects.

Weights reach Serve through `syvla.serving.deployment.publish_weights`: the
version and checkpoint directory go into the app's weight registry, every replica
loads a shadow copy and swaps it in between batches, and publish waits until
every running replica reports the version. Nothing here calls ray.init.
"""

from __future__ import annotations

import socket
from pathlib import Path

import ray

from syvla.rl.config import RLConfig
from syvla.rl.controller import RLWorkers
from syvla.rl.guidance import ExpertSet, SampleRetriever, clip_encoder
from syvla.rl.learner import LearnerGroup, PolicyLearner
from syvla.rl.rollouts import RolloutCollector
from syvla.rl.value_trainer import ValueTrainer


@ray.remote
class RolloutBuffer(RolloutCollector):
    """The rollout buffer: follows the Serve replay directory, hands out rewarded episodes once."""


@ray.remote
class Retriever(SampleRetriever):
    def __init__(self, experts: ExpertSet, cfg: RLConfig):
        super().__init__(experts, clip_encoder(cfg.clip_model, cfg.clip_checkpoint, cfg.device, cfg.seed),
                         cfg.retrieval, cfg.seed)


@ray.remote
class ValueLearner(ValueTrainer):
    def __init__(self, cfg: RLConfig, checkpoint: str, experts: ExpertSet):
        from syvla.model.checkpoint import read_config, read_norm_stats

        super().__init__(cfg, read_config(checkpoint), read_norm_stats(checkpoint), experts)


@ray.remote
class PPOLearner(PolicyLearner):
    def rendezvous(self) -> tuple[str, int]:
        """This node's address and a free TCP port for the process group's store (called on rank 0)."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port


class SyncActor:
    """`proxy.method(*args)` = `ray.get(handle.method.remote(*args))`: actors look like local objects."""

    def __init__(self, handle):
        self._handle = handle

    def __getattr__(self, name):
        method = getattr(self._handle, name)
        return lambda *args, **kwargs: ray.get(method.remote(*args, **kwargs))


def _run_remote(calls) -> list:
    return ray.get([method.remote(*args) for method, args in calls])


def start_learners(cfg: RLConfig, checkpoint: str) -> LearnerGroup:
    """N PPOLearner actors in one torch.distributed group (gloo / NCCL), started from `checkpoint`."""
    n = cfg.num_learners
    opts = dict(num_cpus=cfg.actor_cpus, num_gpus=cfg.learner_gpus)
    handles = [PPOLearner.options(**opts).remote(checkpoint, cfg, rank, n) for rank in range(n)]
    if n > 1:
        address, port = ray.get(handles[0].rendezvous.remote())
        ray.get([h.init_process_group.remote(address, port) for h in handles])
    return LearnerGroup(handles, run_all=_run_remote)


def start_workers(cfg: RLConfig, checkpoint: str | Path, replay_dir: str | Path, experts: ExpertSet) -> RLWorkers:
    """Start every RL actor (the caller has connected to Ray); the expert set goes to the object store once."""
    checkpoint, replay_dir = str(Path(checkpoint).resolve()), str(Path(replay_dir).resolve())
    experts_ref = ray.put(experts)
    opts = dict(num_cpus=cfg.actor_cpus)
    gpu = dict(num_gpus=min(1.0, cfg.learner_gpus)) if cfg.device != "cpu" else {}
    buffer = RolloutBuffer.options(**opts).remote(replay_dir)
    retriever = Retriever.options(**opts, **gpu).remote(experts_ref, cfg) if cfg.use_expert_data else None
    value = ValueLearner.options(**opts, **gpu).remote(cfg, checkpoint, experts_ref)
    learners = start_learners(cfg, checkpoint)
    return RLWorkers(buffer=SyncActor(buffer), retriever=SyncActor(retriever) if retriever is not None else None,
                     value=SyncActor(value), learners=learners)


def stop_workers(workers: RLWorkers) -> None:
    """Kill the actors of `start_workers` (by handle)."""
    for proxy in (workers.buffer, workers.retriever, workers.value):
        if proxy is not None:
            ray.kill(proxy._handle)
    for handle in workers.learners.learners:
        ray.kill(handle)


def rl_metrics_exporter(run_name: str):
    """on_episode for RLController: each RL episode's success rate (per policy version that collected it), clip
    fraction and episode count as Prometheus gauges (ray.util.metrics; exported as ray_syvla_rl_*)."""
    from ray.util.metrics import Gauge

    success = Gauge("syvla_rl_success_rate", description="0/1-reward success of an RL episode's rollouts, by the "
                    "policy version that collected them", tag_keys=("run", "policy_version"))
    clip = Gauge("syvla_rl_clip_fraction", description="PPO clip fraction of the episode's update", tag_keys=("run",))
    episodes = Gauge("syvla_rl_episodes", description="RL episodes completed", tag_keys=("run",))

    def export(m: dict) -> None:
        success.set(float(m["success_rate"]), tags={"run": run_name, "policy_version": str(m["version"])})
        clip.set(float(m["clip_fraction"]), tags={"run": run_name})
        episodes.set(float(m["episode"]) + 1, tags={"run": run_name})

    return export


def serve_publisher(app_name: str, timeout_s: float = 300.0, log=print):
    """publish(ckpt_dir, version): every replica of `app_name` switches to `version` (waits for all of them).

    Re-publishing a version the app's registry already holds (a controller
    resumed on a cluster that kept running) is a no-op: replicas load what the
    registry holds by themselves.
    """
    from syvla.serving.deployment import get_registry, publish_weights

    def publish(ckpt_dir: str, version: int) -> None:
        history = ray.get(get_registry(app_name).history.remote(1))
        if history and history[-1][0] >= version:
            log(f"[rl] version {version} already published to {app_name!r} (registry at v{history[-1][0]})")
            return
        publish_weights(app_name, ckpt_dir, version, wait=True, timeout_s=timeout_s)

    return publish
