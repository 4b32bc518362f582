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

from syvla.cli import field
from syvla.serving.config import DeploymentConfig, ServeConfig

DEBUG_CHECKPOINT = "debug"  # name of the directory created under checkpoints_dir when none exists


@dataclasses.dataclass(frozen=True)
class ServeRunConfig:
    """`pipelines/serve.py`: which weights, where, how many replicas."""

    checkpoint: str = field("", "checkpoint dir; '' = newest under checkpoints_dir, else a new debug checkpoint")
    checkpoints_dir: str = field("checkpoints", "where checkpoints are searched when --checkpoint is ''")
    version: int = field(-1, "policy version to stamp; -1 = the checkpoint's own `policy_version` file")
    app_name: str = field("syvla", "Serve application name (publish_weights addresses it)")
    host: str = field("127.0.0.1", "HTTP host; loopback by default (docs/serving.md: put a proxy in front for "
                                   "remote robots)")
    port: int = field(8000, "HTTP port")
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig,
                                         help="replicas, autoscaling, back-pressure (--deployment.*)")
    device: str = field("cpu", "torch device of each replica: cpu or cuda (with --deployment.num_gpus)")
    replay_dir: str = field("runs/replay", "replay buffer directory (made absolute); '' = no replay buffer")
    api_key: str = field("", "API key robots must send; '' = $SYVLA_API_KEY when set, else no key")
    episode_secret: str = field("", "key that signs episode ids; '' = $SYVLA_EPISODE_SECRET when set, else a random "
                                    "one per start (running episodes then end with the server)")
    max_batch_size: int = field(8, "observations per Policy.infer_batch call")
    batch_wait_timeout_s: float = field(0.0, "seconds a batch waits to fill (0 = natural batching)")
    undo_window_s: float = field(30.0, "the operator page (/operator) may withdraw a label this many seconds after "
                                       "posting it; RL takes a label only after that")
    vlm_every: int = field(1, "an episode's VLM runs on every k-th act call, the expert on every call "
                              "(ServeConfig.vlm_every); 1 = every call")
    ingress: str = field("proxy", "HTTP ingress: proxy (Serve's Python proxy) or haproxy (Serve's HAProxy "
                                  "ingress, plain HTTP only; a cluster must be started with "
                                  "RAY_SERVE_ENABLE_HA_PROXY=1, a local one is)")
    blocking: bool = field(True, "serve until interrupted (false: start, report, return)")

    def __post_init__(self):
        for name in ("port", "max_batch_size", "vlm_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServeRunConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.undo_window_s < 0:
            raise ValueError(f"ServeRunConfig.undo_window_s must be >= 0, got {self.undo_window_s}")
        if self.version < -1:
            raise ValueError(f"ServeRunConfig.version must be >= -1, got {self.version}")
        if self.ingress not in INGRESSES:
            raise ValueError(f"ServeRunConfig.ingress must be one of {sorted(INGRESSES)}, got {self.ingress!r}")


# ingress -> the value of the environment variable Ray Serve reads when its processes start.
INGRESSES = {"proxy": "0", "haproxy": "1"}
HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"


def prepare_ingress(cfg: ServeRunConfig) -> None:
    """Before `ray.init`: a local cluster started from this process inherits the ingress `cfg` asks for
    (a running cluster keeps its own: `check_ingress`). Refuses when this process already read Serve's."""
    import sys

    want = INGRESSES[cfg.ingress]
    os.environ[HA_PROXY_ENV] = want
    constants = sys.modules.get("ray.serve._private.constants")
    if constants is not None and constants.RAY_SERVE_ENABLE_HA_PROXY != (want == "1"):
        raise RuntimeError(f"ServeRunConfig.ingress={cfg.ingress!r}: Ray Serve was imported in this process "
                           f"before the ingress was set; start a new process")


def check_ingress(cfg: ServeRunConfig) -> None:
    """On a running cluster: refuse an ingress the cluster was not started with (Serve reads it at start)."""
    import ray

    @ray.remote(num_cpus=0)
    def cluster_setting():
        return os.environ.get(HA_PROXY_ENV, "0")

    have = ray.get(cluster_setting.remote())
    running = "haproxy" if have == INGRESSES["haproxy"] else "proxy"
    if running != cfg.ingress:
        raise ValueError(f"ServeRunConfig.ingress={cfg.ingress!r}, but this Ray cluster was started for the "
                         f"{running!r} ingress ({HA_PROXY_ENV}={have!r} on its nodes); start it with "
                         f"{HA_PROXY_ENV}={INGRESSES[cfg.ingress]} before `ray start`, or pass "
                         f"--ingress {running}")


def find_checkpoint(explicit: str, roots: list[Path], fallback: Path, *, field: str, who: str, embodiments=(),
                    log=print) -> Path:
    """`explicit` (which must be a checkpoint), else the newest under the first of `roots` that has one,
    else an untrained debug checkpoint for `embodiments` at `fallback` (written once), with a loud warning."""
    from syvla.model.checkpoint import is_checkpoint_dir, newest_checkpoint

    if explicit:
        path = Path(explicit)
        if not is_checkpoint_dir(path):
            raise FileNotFoundError(f"{field} {path} is not a policy checkpoint directory")
        return path
    for root in roots:
        path = newest_checkpoint(root)
        if path is not None:
            log(f"[{who}] newest checkpoint under {root}/: {path}")
            return path
    if not is_checkpoint_dir(fallback):
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
                       episode_secret=cfg.episode_secret or os.environ.get("SYVLA_EPISODE_SECRET", ""),
                       max_batch_size=cfg.max_batch_size, batch_wait_timeout_s=cfg.batch_wait_timeout_s,
                       undo_window_s=cfg.undo_window_s, vlm_every=cfg.vlm_every)


def serve_policy(cfg: ServeRunConfig, server: ServeConfig, timeout_s: float = 600.0) -> str:
    """Start Serve's HTTP proxy and the application; return its URL once every replica is up."""
    from ray import serve

    from syvla.serving.deployment import policy_app, reset_registry

    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    if reset_registry(cfg.app_name):
        print(f"[serve] {cfg.app_name}: dropped the versions an earlier deployment of this name published; "
              f"this one starts from its own checkpoint", flush=True)
    serve.run(policy_app(server, cfg.deployment), name=cfg.app_name, route_prefix="/", blocking=False)
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
