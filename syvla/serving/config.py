"""Serving configuration: one frozen dataclass, validated field by field."""

from __future__ import annotations

import dataclasses

from syvla.serving.protocol import Limits


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What one policy server (a Serve replica, or the in-process app) needs to know."""

    checkpoint: str = ""  # checkpoint directory served at start (the `uri` of version `version`)
    version: int = 0  # policy version stamped on every response served by `checkpoint`
    device: str = "cpu"
    replay_dir: str = "runs/replay"  # shared directory of replay segments (absolute on a cluster); "" = off
    replay_segment_bytes: int = 256 * 2**20  # a replica starts a new segment file past this size
    api_key: str = ""  # required in `x-api-key` (or `Authorization: Bearer`) on /v1/*; "" = open
    max_body_bytes: int = 16 * 2**20  # larger requests get 413
    max_image_side: int = 1024  # pixels; larger camera images get 413
    default_deadline_ms: float = 30_000.0  # server-side budget when the robot sends none; 504 past it
    max_batch_size: int = 8  # @serve.batch: observations per Policy.infer_batch call
    # 0 = natural batching: a batch takes whatever arrived while the previous one ran, and a lone
    # robot never waits for company. Raise it (a few ms) when many robots send in step.
    batch_wait_timeout_s: float = 0.0  # @serve.batch: seconds a batch waits to fill
    keep_versions: int = 2  # policy versions held in memory for pinned episodes (current + older)
    weight_poll_s: float = 0.5  # replicas poll the weight registry this often (0 = never)

    def __post_init__(self):
        for name in ("replay_segment_bytes", "max_body_bytes", "max_image_side", "default_deadline_ms",
                     "max_batch_size", "keep_versions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServeConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.version < 0:
            raise ValueError(f"ServeConfig.version must be >= 0, got {self.version}")
        if self.batch_wait_timeout_s < 0 or self.weight_poll_s < 0:
            raise ValueError("ServeConfig.batch_wait_timeout_s and ServeConfig.weight_poll_s must be >= 0")

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
