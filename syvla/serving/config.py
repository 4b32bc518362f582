"""Serving configuration: frozen dataclasses, validated field by field.

`ServeConfig` is what one replica needs (weights, replay, limits, batching); `DeploymentConfig`
is the one source of the Serve deployment's options (replicas, autoscaling, back-pressure,
health checks): `policy_app` and `pipelines/serve.py` derive Serve's options from it, and
cluster/serve_config.yaml states the same values (a test keeps them equal).
"""

from __future__ import annotations

import dataclasses

from syvla.cli import field
from syvla.serving.protocol import Limits


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What one policy server (a Serve replica, or the in-process app) needs to know."""

    checkpoint: str = field("", "checkpoint directory served at start (the `uri` of version `version`)")
    version: int = field(0, "policy version stamped on every response served by `checkpoint`")
    device: str = field("cpu", "torch device of the policy: cpu, cuda, cuda:N")
    replay_dir: str = field("runs/replay", "shared directory of replay segments (absolute on a cluster); '' = off")
    replay_segment_bytes: int = field(256 * 2**20, "a replica starts a new segment file past this size")
    api_key: str = field("", "required in `x-api-key` (or `Authorization: Bearer`) on /v1/*; '' = open")
    max_body_bytes: int = field(16 * 2**20, "larger requests get 413")
    max_image_side: int = field(1024, "pixels; larger camera images get 413")
    default_deadline_ms: float = field(30_000.0, "server-side budget when the robot sends none; 504 past it")
    body_timeout_s: float = field(10.0, "a request body must arrive within this many seconds of its headers; 408 past it")
    upload_grace_s: float = field(0.25, "a body still arriving after this many seconds is a slow upload and needs "
                                        "one of max_slow_uploads slots")
    max_slow_uploads: int = field(8, "slow uploads a replica reads at once; one more gets 503 with Retry-After "
                                     "(stalled clients cannot take every request slot, /healthz included)")
    episode_secret: str = field("", "HMAC key that signs episode ids (unknown or edited ids get 404); '' = a random "
                                    "one per app, shared by its replicas (episodes end with the app)")
    max_batch_size: int = field(8, "@serve.batch: observations per Policy.infer_batch call")
    # 0 = natural batching: a batch takes whatever arrived while the previous one ran, and a lone
    # robot never waits for company. Raise it (a few ms) when many robots send in step.
    batch_wait_timeout_s: float = field(0.0, "@serve.batch: seconds a batch waits to fill (0 = natural batching)")
    keep_versions: int = field(2, "policy versions held in memory for pinned episodes (current + older)")
    weight_poll_s: float = field(0.5, "replicas poll the weight registry this often in seconds (0 = never)")
    blind_checkpoints: tuple[str, ...] = field((), "blind evaluation: these checkpoints are served as versions "
                                                    "0..K-1 and each new episode is assigned to one by a balanced "
                                                    "random schedule; answers hide which (docs/operator.md)")
    blind_seed: int = field(-1, "blind evaluation: the schedule's seed; -1 = a random one (keep it from operators)")
    blind_min_ms: float = field(0.0, "blind evaluation: every act answer waits until this many ms after its arrival, "
                                     "so checkpoints of different speed answer alike (set above the slowest one's "
                                     "latency)")
    undo_window_s: float = field(30.0, "the operator page may withdraw a label this many seconds after posting it; "
                                       "RL takes a labelled episode only after that")
    vlm_every: int = field(1, "an episode's VLM runs on every k-th act call; the calls between reuse its last "
                              "Feature Query States (and CoT) and run only the action expert on their fresh "
                              "images and state (§3.1); a new instruction always runs it. 1 = every call")

    def __post_init__(self):
        object.__setattr__(self, "blind_checkpoints", tuple(self.blind_checkpoints))
        for name in ("replay_segment_bytes", "max_body_bytes", "max_image_side", "default_deadline_ms",
                     "max_batch_size", "keep_versions", "body_timeout_s", "upload_grace_s", "max_slow_uploads",
                     "vlm_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServeConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.version < 0:
            raise ValueError(f"ServeConfig.version must be >= 0, got {self.version}")
        if self.batch_wait_timeout_s < 0 or self.weight_poll_s < 0 or self.undo_window_s < 0 or self.blind_min_ms < 0:
            raise ValueError("ServeConfig.batch_wait_timeout_s, weight_poll_s, undo_window_s and blind_min_ms must "
                             "be >= 0")
        if self.blind_min_ms and not self.blind_checkpoints:
            raise ValueError("ServeConfig.blind_min_ms applies to blind servers only (set blind_checkpoints)")
        if self.blind_checkpoints:
            k = len(self.blind_checkpoints)
            if k < 2 or len(set(self.blind_checkpoints)) != k:
                raise ValueError(f"ServeConfig.blind_checkpoints must name at least 2 different checkpoints, "
                                 f"got {list(self.blind_checkpoints)}")
            if self.checkpoint:
                raise ValueError("ServeConfig.checkpoint and blind_checkpoints exclude each other: a blind server "
                                 "serves exactly its blind_checkpoints")
            if self.keep_versions < k:
                raise ValueError(f"ServeConfig.keep_versions ({self.keep_versions}) must be >= the {k} "
                                 "blind_checkpoints, which are all held at once")
            if self.weight_poll_s:
                raise ValueError("ServeConfig.weight_poll_s must be 0 with blind_checkpoints: a weight update "
                                 "during a blind comparison would change an arm")

    @property
    def blind(self) -> bool:
        return bool(self.blind_checkpoints)

    @property
    def limits(self) -> Limits:
        return Limits(max_body_bytes=self.max_body_bytes, max_image_side=self.max_image_side)

    @classmethod
    def from_dict(cls, data: dict) -> "ServeConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"ServeConfig has no field {unknown[0]!r}; fields: {sorted(names)}")
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class DeploymentConfig:
    """The Serve deployment: replicas, autoscaling, back-pressure, health checks (defaults for a GPU cluster)."""

    num_replicas: int = field(0, "fixed replica count; 0 = autoscale between min_replicas and max_replicas")
    min_replicas: int = field(1, "autoscaling: fewest replicas")
    max_replicas: int = field(4, "autoscaling: most replicas")
    target_ongoing_requests: int = field(0, "autoscaling: ongoing requests per replica it aims for; "
                                            "0 = the replica's max_batch_size (a full batch each)")
    upscale_delay_s: float = field(10.0, "autoscaling: seconds of demand above target before adding a replica")
    downscale_delay_s: float = field(120.0, "autoscaling: seconds of demand below target before removing one")
    num_cpus: float = field(1.0, "CPUs Ray reserves per replica")
    num_gpus: float = field(0.0, "GPUs per replica (set the server's device to cuda too)")
    max_ongoing_requests: int = field(32, "requests one replica works on at once (a few batches' worth)")
    max_queued_requests: int = field(64, "queued requests beyond which the proxy answers 503 instead of queueing "
                                         "forever (the client retries within its deadline)")
    health_check_period_s: float = field(10.0, "seconds between two replica health checks")
    health_check_timeout_s: float = field(30.0, "a health check taking longer fails the replica")
    graceful_shutdown_timeout_s: float = field(30.0, "seconds a stopping replica gets to finish its requests")

    def __post_init__(self):
        for name in ("min_replicas", "max_ongoing_requests", "max_queued_requests", "health_check_period_s",
                     "health_check_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DeploymentConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("num_replicas", "target_ongoing_requests", "upscale_delay_s", "downscale_delay_s", "num_cpus",
                     "num_gpus", "graceful_shutdown_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"DeploymentConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"DeploymentConfig.max_replicas ({self.max_replicas}) must be >= min_replicas "
                             f"({self.min_replicas})")

    def options(self, max_batch_size: int) -> dict:
        """Serve's deployment options (`serve.deployment(...).options(**)`) for replicas batching `max_batch_size`."""
        opts = dict(max_ongoing_requests=self.max_ongoing_requests, max_queued_requests=self.max_queued_requests,
                    health_check_period_s=self.health_check_period_s,
                    health_check_timeout_s=self.health_check_timeout_s,
                    graceful_shutdown_timeout_s=self.graceful_shutdown_timeout_s,
                    ray_actor_options={"num_cpus": self.num_cpus, "num_gpus": self.num_gpus})
        if self.num_replicas:
            opts["num_replicas"] = self.num_replicas
        else:
            opts["autoscaling_config"] = {
                "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests or max(1, max_batch_size),
                "upscale_delay_s": self.upscale_delay_s, "downscale_delay_s": self.downscale_delay_s}
        return opts
