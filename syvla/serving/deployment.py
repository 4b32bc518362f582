"""Ray Serve deployment of the robot API: the Ray edge around `PolicyHost`.

- FastAPI ingress (`@serve.ingress()`, app built per replica by
  `__serve_build_asgi_app__` from `syvla.serving.app.create_app`).
- `@serve.batch` + `NaturalBatcher`: concurrent robots' observations share
  one `Policy.infer_batch` call and one replay fsync (syvla/serving/batching.py
  says why Serve's batching alone is not enough).
- Back-pressure: `max_ongoing_requests` per replica, `max_queued_requests`
  beyond which the proxy answers 503 (the client retries within its deadline);
  autoscaling on ongoing requests. Every option comes from
  `syvla.serving.config.DeploymentConfig`.
- Weights: `reconfigure(user_config)` with `{"version", "uri"}` (what
  `serve deploy` of an edited config sends), and `publish_weights()`, which
  stamps `{version, uri}` into a named registry actor that every replica
  polls. Both load a shadow copy in a worker thread and swap it in under a
  lock between batches (`PolicyHost.load_version`); running episodes stay on
  their pinned version.
- Replay: one writer per replica, own segment files in the shared `replay_dir`.

Nothing here calls `ray.init`; pipelines connect to Ray and call `policy_app`
or `serve run cluster/serve_config.yaml` imports `build_app`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import re
import secrets
import time
from pathlib import Path

import ray
from ray import serve

from syvla.serving.app import create_app
from syvla.serving.batching import NaturalBatcher
from syvla.serving.config import DeploymentConfig, ServeConfig
from syvla.serving.host import PolicyHost
from syvla.serving.metrics import ACT_PARTS, BATCH_BOUNDARIES, LATENCY_BOUNDARIES_MS, ServingMetrics
from syvla.serving.replay_buffer import ReplayWriter

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "SyVLAPolicy"
REGISTRY_NAMESPACE = "syvla"


def registry_name(app_name: str) -> str:
    return f"syvla-weights-{app_name}"


@ray.remote(num_cpus=0)
class WeightRegistry:
    """The published weights of one Serve app: `{version, uri}` history and the replicas' acks."""

    def __init__(self):
        self._history: list[tuple[int, str]] = []
        self._acks: dict[str, tuple[int, float]] = {}

    def publish(self, version: int, uri: str) -> None:
        """Refuses (ValueError) a version not newer than the last published: versions only move forward."""
        if self._history and version <= self._history[-1][0]:
            raise ValueError(f"version {version} is not newer than the published {self._history[-1][0]}")
        self._history.append((int(version), str(uri)))

    def history(self, n: int) -> list[tuple[int, str]]:
        return self._history[-n:]

    def ack(self, replica: str, version: int) -> None:
        self._acks[replica] = (int(version), time.time())

    def acks(self) -> dict[str, tuple[int, float]]:
        return dict(self._acks)


def get_registry(app_name: str):
    # Detached: outlives the publishing driver, so replicas started later still find it.
    return WeightRegistry.options(name=registry_name(app_name), namespace=REGISTRY_NAMESPACE,
                                  lifetime="detached", get_if_exists=True).remote()


def reset_registry(app_name: str, timeout_s: float = 30.0) -> bool:
    """Drop the published history of `app_name` (kill its detached registry); True if there was one.

    A new deployment starts from the checkpoint it is given: without this, an app deployed again under
    the same name (a second RL run on the same cluster) would load the versions the earlier one published."""
    try:
        actor = ray.get_actor(registry_name(app_name), namespace=REGISTRY_NAMESPACE)
    except ValueError:
        return False
    ray.kill(actor)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            ray.get_actor(registry_name(app_name), namespace=REGISTRY_NAMESPACE)
        except ValueError:
            return True
        time.sleep(0.1)
    raise TimeoutError(f"the weight registry of Serve app {app_name!r} did not go away within {timeout_s} s")


def _never_raises(method):
    """Metrics must never fail a request: a recording error is logged at debug level and dropped."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            method(self, *args, **kwargs)
        except Exception as exc:
            log.debug("metrics %s: %r", method.__name__, exc)

    return guarded


class RayServingMetrics(ServingMetrics):
    """The app's reports as Prometheus metrics (`ray.util.metrics`; Ray exports them as `ray_syvla_*` from
    each node's metrics endpoint, tagged with the replica's worker). Names and tags: docs/serving.md#metrics."""

    def __init__(self, app_name: str):
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = {"app": app_name}
        self._requests = Counter("syvla_requests_total", description="answered requests by route, status and "
                                 "refused field", tag_keys=("app", "route", "status", "field"))
        self._act_ms = Histogram("syvla_act_ms", description="act latency and its parts (ms)",
                                 boundaries=list(LATENCY_BOUNDARIES_MS), tag_keys=("app", "part"))
        self._batch = Histogram("syvla_act_batch_size", description="observations per Policy.infer_batch call",
                                boundaries=list(BATCH_BOUNDARIES), tag_keys=("app",))
        self._version = Gauge("syvla_policy_version", description="policy version of the last act served",
                              tag_keys=("app",))
        self._replay = Gauge("syvla_replay_bytes", description="bytes this replica wrote to the replay buffer",
                             tag_keys=("app",))
        self._slow = Gauge("syvla_slow_uploads", description="request bodies past upload_grace_s being read",
                           tag_keys=("app",))
        for m in (self._requests, self._act_ms, self._batch, self._version, self._replay, self._slow):
            m.set_default_tags(tags)

    @_never_raises
    def request(self, route, status, field=""):
        self._requests.inc(1, tags={"route": route, "status": str(status), "field": field or ""})

    @_never_raises
    def act(self, timing, policy_version):
        for part in ACT_PARTS:
            if part in timing:
                self._act_ms.observe(float(timing[part]), tags={"part": part[:-3]})
        self._batch.observe(float(timing.get("batch_size", 1)))
        self._version.set(float(policy_version))

    @_never_raises
    def replay(self, bytes_written):
        self._replay.set(float(bytes_written))

    @_never_raises
    def slow_uploads(self, in_progress):
        self._slow.set(float(in_progress))


@serve.ingress()
class PolicyDeployment:
    """One replica: a `PolicyHost`, its replay writer, and the FastAPI app over them."""

    async def __init__(self, config: dict):
        self.config = ServeConfig.from_dict(config)
        ctx = serve.get_replica_context()
        self.app_name = ctx.app_name
        self.replica_id = re.sub(r"[^A-Za-z0-9_-]", "_", f"{ctx.app_name}-{ctx.replica_id.unique_id}-{os.getpid()}")
        replay = None
        if self.config.replay_dir:
            replay = ReplayWriter(Path(self.config.replay_dir), writer_id=self.replica_id,
                                  segment_bytes=self.config.replay_segment_bytes)
        self.host = PolicyHost(self.config, replay=replay)
        self._batcher = NaturalBatcher(self.host.act_batch_items, self.config.max_batch_size)
        self._batched.set_max_batch_size(self.config.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)
        if self.config.blind:
            await asyncio.to_thread(self.host.load_blind)
        elif self.config.checkpoint:
            await asyncio.to_thread(self.host.load_version, self.config.version, self.config.checkpoint)
        self._registry = None
        if self.config.weight_poll_s > 0:
            await self._sync_registry()  # a replica started after a publish begins on the published weights
            self._poller = asyncio.get_running_loop().create_task(self._follow_registry())

    def __serve_build_asgi_app__(self):
        return create_app(self.host, act=self._act, metrics=RayServingMetrics(self.app_name))

    async def _act(self, req, arrived: float):
        return await self._batched((req, arrived))

    # The window gathers robots that send together while the model is idle; batches that form while it
    # is busy (many concurrent ones, hence max_concurrent_batches) merge in the NaturalBatcher, whose
    # single worker runs Policy.infer_batch in a thread so the event loop keeps taking requests.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0, max_concurrent_batches=256)  # sizes reset in __init__
    async def _batched(self, items: list[tuple]) -> list:
        return await self._batcher.submit_many(items)

    async def reconfigure(self, user_config: dict) -> None:
        """`{"version": int, "uri": checkpoint dir}`: load it beside the held versions, then swap."""
        if self.config.blind:
            raise ValueError("a blind server serves its blind_checkpoints only; it takes no user_config weights")
        if not isinstance(user_config, dict) or not {"version", "uri"} <= set(user_config):
            raise ValueError(f'user_config must be {{"version": int, "uri": str}}, got {user_config!r}')
        await asyncio.to_thread(self.host.load_version, int(user_config["version"]), resolve_path(str(user_config["uri"])))

    async def check_health(self) -> None:
        reason = self.host.health()
        if reason is not None:
            raise RuntimeError(reason)

    async def _sync_registry(self) -> None:
        if self._registry is None:
            self._registry = get_registry(self.app_name)
        for version, uri in await self._registry.history.remote(self.config.keep_versions):
            held = self.host.versions
            # Skip what we hold and what would be dropped at once (older than all, e.g. after a reconfigure).
            if version in held or (len(held) >= self.config.keep_versions and version < held[0]):
                continue
            await asyncio.to_thread(self.host.load_version, version, uri)
        if self.host.current_version is not None:
            await self._registry.ack.remote(self.replica_id, self.host.current_version)

    async def _follow_registry(self) -> None:
        while True:
            await asyncio.sleep(self.config.weight_poll_s)
            try:
                await self._sync_registry()
            except Exception as exc:  # a failed load or a lost registry: keep serving what we hold
                log.warning("weight registry sync failed: %r", exc)
                self._registry = None


def policy_app(config: ServeConfig, deployment: DeploymentConfig | None = None, **options):
    """The Serve application for `serve.run`.

    Its deployment options come from `deployment` (default `DeploymentConfig()`); raw Serve `options`
    override single ones (tests: `num_replicas=2, ray_actor_options=...`; a fixed num_replicas drops
    the autoscaling config).
    """
    if not config.episode_secret:  # one secret for every replica of this app, so any replica verifies any id
        config = dataclasses.replace(config, episode_secret=secrets.token_hex(32))
    opts = dict((deployment or DeploymentConfig()).options(config.max_batch_size), **options)
    if "num_replicas" in options:
        opts.pop("autoscaling_config", None)
    if config.blind:
        config = dataclasses.replace(config, blind_checkpoints=tuple(resolve_path(c) for c in config.blind_checkpoints))
    elif config.checkpoint and "user_config" not in opts:
        opts["user_config"] = {"version": config.version, "uri": config.checkpoint}
    return serve.deployment(name=DEPLOYMENT_NAME)(PolicyDeployment).options(**opts).bind(
        {k: getattr(config, k) for k in config.__dataclass_fields__})


ROOT_ENV = "SYVLA_ROOT"  # relative paths of a Serve config resolve against it
DEMO_CHECKPOINT = "checkpoints/finetune/demo-finetune"  # what `make demo` fine-tunes


def resolve_path(path: str) -> str:
    """`path` made absolute: a relative one against $SYVLA_ROOT, default the checkout holding this package
    (replicas run in Ray's own working directory, so a config's relative paths mean the project's)."""
    if not path or Path(path).is_absolute() or "://" in path:
        return path
    root = os.environ.get(ROOT_ENV) or Path(__file__).resolve().parents[2]
    return str((Path(root) / path).resolve())


def _serve_args_model():
    import typing

    import pydantic

    hints = typing.get_type_hints(ServeConfig)
    fields = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(ServeConfig)}
    return pydantic.create_model("ServeArgs", __config__=pydantic.ConfigDict(extra="forbid", strict=False), **fields)


ServeArgs = _serve_args_model()  # ServeConfig's fields as the typed args of `build_app` (Serve validates them)


def build_app(args: ServeArgs):
    """Application builder for `serve run` / `serve deploy` (cluster/serve_config.yaml): `args` are ServeConfig
    fields, validated by type before any replica starts; relative `checkpoint` / `replay_dir` resolve against
    the checkout (`resolve_path`)."""
    if not isinstance(args, ServeArgs):
        args = ServeArgs.model_validate(dict(args or {}))
    cfg = ServeConfig.from_dict(args.model_dump())
    # The checkpoint is read where the replicas run (a cluster path need not exist where this builds).
    return policy_app(dataclasses.replace(cfg, checkpoint=resolve_path(cfg.checkpoint),
                                          replay_dir=resolve_path(cfg.replay_dir)))


build_app.__annotations__["args"] = ServeArgs  # a class, not a string: Serve converts the args dict through it


def __getattr__(name: str):
    """`app`: the application `serve build syvla.serving.deployment:app -o serve_config.yaml` writes out: the
    demo's fine-tuned checkpoint (or $SYVLA_SERVE_CHECKPOINT) as user_config, every deployment option."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from syvla.model.checkpoint import is_checkpoint_dir, read_policy_version

    uri = resolve_path(os.environ.get("SYVLA_SERVE_CHECKPOINT", DEMO_CHECKPOINT))
    version = read_policy_version(Path(uri)) if is_checkpoint_dir(Path(uri)) else 0
    return policy_app(ServeConfig(replay_dir=resolve_path("runs/replay")), user_config={"version": version, "uri": uri})


def publish_weights(app_name: str, ckpt_dir: str | os.PathLike, version: int, wait: bool = True,
                    timeout_s: float = 300.0) -> None:
    """Make `version` (weights in `ckpt_dir`) current on every replica of `app_name`.

    Called by the RL controller. Stamps `{version, uri}` into the app's weight
    registry; each replica loads a shadow copy and swaps it in between
    batches. With `wait`, returns once every running replica reports it (or
    raises TimeoutError). `ckpt_dir` must be readable by every replica's node.
    """
    registry = get_registry(app_name)
    ray.get(registry.publish.remote(int(version), str(Path(ckpt_dir).resolve())))
    if not wait:
        return
    end = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(app_name)
        running = status.deployments[DEPLOYMENT_NAME].replica_states.get("RUNNING", 0) if status else 0
        acks = ray.get(registry.acks.remote())
        fresh = time.time() - 30.0  # acks of replicas that died long ago do not count
        done = sum(1 for v, t in acks.values() if v >= version and t >= fresh)
        if running and done >= running:
            return
        if time.monotonic() > end:
            raise TimeoutError(f"policy version {version}: {done} of {running} replicas of {app_name!r} "
                               f"loaded it within {timeout_s} s")
        time.sleep(0.2)
