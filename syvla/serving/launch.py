"""Start the policy server from a checkpoint: what `pipelines/serve.py` and the benchmarks call.

`resolve_checkpoint` finds the checkpoint to serve (an explicit one, else the
newest under `checkpoints/`, else a freshly made untrained debug checkpoint,
which it says); `serve_policy` starts Serve's proxy on the configured host and
port and runs the application. The caller connects to Ray first.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from syvla import constants as K
from syvla.serving.config import ServeConfig

DEBUG_CHECKPOINT = "debug"  # name of the directory created under checkpoints_dir when none exists


@dataclasses.dataclass(frozen=True)
class ServeRunConfig:
    """`pipelines/serve.py`: which weights, where, how many replicas."""

    checkpoint: str = ""  # checkpoint dir; "" = newest under checkpoints_dir, else a new debug checkpoint
    checkpoints_dir: str = "checkpoints"
    version: int = -1  # policy version to stamp; -1 = the checkpoint's own `policy_version` file
    app_name: str = "syvla"
    host: str = "127.0.0.1"  # loopback by default (docs/serving.md: put a proxy in front for remote robots)
    port: int = 8000
    num_replicas: int = 0  # fixed replica count; 0 = autoscale between 1 and max_replicas
    max_replicas: int = 4
    num_cpus: float = 1.0  # per replica
    num_gpus: float = 0.0  # per replica (set device=cuda too)
    max_ongoing_requests: int = 32  # per replica
    max_queued_requests: int = 64  # then 503
    device: str = "cpu"
    replay_dir: str = "runs/replay"  # "" = no replay buffer
    api_key: str = ""  # "" = $SYVLA_API_KEY when set, else no key
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.0
    address: str = ""  # Ray cluster address; "" = $RAY_ADDRESS, else a local cluster
    blocking: bool = True  # serve until interrupted (False: start, report, return)

    def __post_init__(self):
        for name in ("port", "max_replicas", "max_ongoing_requests", "max_queued_requests", "max_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServeRunConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.num_replicas < 0 or self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError("ServeRunConfig.num_replicas, num_cpus and num_gpus must be >= 0")
        if self.version < -1:
            raise ValueError(f"ServeRunConfig.version must be >= -1, got {self.version}")


def is_checkpoint(path: Path) -> bool:
    return (path / K.CKPT_CONFIG).is_file() and (path / K.CKPT_POLICY_VERSION).is_file()


def newest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The most recently written checkpoint directory under `root` (searched two levels deep)."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = [p for p in [root, *root.glob("*"), *root.glob("*/*")] if p.is_dir() and is_checkpoint(p)]
    return max(found, key=lambda p: (p / K.CKPT_POLICY_VERSION).stat().st_mtime, default=None)


def find_checkpoint(explicit: str, roots: list[Path], fallback: Path, *, field: str, who: str, embodiments=(),
                    log=print) -> Path:
    """`explicit` (which must be a checkpoint), else the newest under the first of `roots` that has one,
    else an untrained debug checkpoint for `embodiments` at `fallback` (written once), with a loud warning."""
    if explicit:
        path = Path(explicit)
        if not is_checkpoint(path):
            raise FileNotFoundError(f"{field} {path} is not a policy checkpoint directory")
        return path
    for root in roots:
        path = newest_checkpoint(root)
        if path is not None:
            log(f"[{who}] newest checkpoint under {root}/: {path}")
            return path
    if not is_checkpoint(fallback):
        from syvla.model.policy import make_debug_checkpoint

        make_debug_checkpoint(fallback, seed=0, embodiments=embodiments)
    log(f"[{who}] WARNING: no checkpoint under {', '.join(f'{r}/' for r in roots)}: using an UNTRAINED debug "
        f"checkpoint at {fallback} (its actions are noise; expect success near 0)")
    return fallback


def resolve_checkpoint(cfg: ServeRunConfig, embodiments=(), log=print) -> tuple[Path, int]:
    """(checkpoint dir, version) to serve; creates a debug checkpoint for `embodiments` (the caller's robots)
    when there is none, and says so."""
    from syvla.model.checkpoint import read_policy_version

    root = Path(cfg.checkpoints_dir)
    path = find_checkpoint(cfg.checkpoint, [root], root / DEBUG_CHECKPOINT, field="ServeRunConfig.checkpoint",
                           who="serve", embodiments=embodiments, log=log)
    version = read_policy_version(path) if cfg.version < 0 else cfg.version
    return path.resolve(), version


def serve_config(cfg: ServeRunConfig, checkpoint: Path, version: int) -> ServeConfig:
    return ServeConfig(checkpoint=str(checkpoint), version=version, device=cfg.device,
                       replay_dir=str(Path(cfg.replay_dir).resolve()) if cfg.replay_dir else "",
                       api_key=cfg.api_key or os.environ.get("SYVLA_API_KEY", ""),
                       max_batch_size=cfg.max_batch_size, batch_wait_timeout_s=cfg.batch_wait_timeout_s)


def serve_policy(cfg: ServeRunConfig, server: ServeConfig, timeout_s: float = 600.0) -> str:
    """Start Serve's HTTP proxy and the application; return its URL once every replica is up."""
    from ray import serve

    from syvla.serving.deployment import policy_app

    options = dict(max_ongoing_requests=cfg.max_ongoing_requests, max_queued_requests=cfg.max_queued_requests,
                   ray_actor_options={"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus})
    if cfg.num_replicas:
        options["num_replicas"] = cfg.num_replicas
    else:
        options["autoscaling_config"] = {"min_replicas": 1, "max_replicas": cfg.max_replicas,
                                         "target_ongoing_requests": max(1, cfg.max_batch_size),
                                         "upscale_delay_s": 10, "downscale_delay_s": 120}
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(policy_app(server, **options), name=cfg.app_name, route_prefix="/", blocking=False)
    end = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(cfg.app_name)
        if status is not None and status.status == "RUNNING":
            return f"http://{cfg.host}:{cfg.port}"
        if status is not None and status.status == "DEPLOY_FAILED":
            raise RuntimeError(f"Serve app {cfg.app_name!r} failed to deploy: {status.message}")
        if time.monotonic() > end:
            raise TimeoutError(f"Serve app {cfg.app_name!r} not running after {timeout_s} s: {status}")
        time.sleep(0.5)
