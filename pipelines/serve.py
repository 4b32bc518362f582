"""Serve a SyVLA policy to robots over HTTP (Ray Serve): the robot API of docs/serving.md.

    python pipelines/serve.py                        # newest checkpoint under checkpoints/ (or a new debug one)
    python pipelines/serve.py --checkpoint checkpoints/ft --deployment.num_replicas 2 --port 8000
    python pipelines/serve.py --ingress haproxy     # Serve's HAProxy ingress (docs/serving.md#ingress)
    ray job submit -- python pipelines/serve.py --device cuda --deployment.num_gpus 1 --blocking false
    serve run cluster/serve_config.yaml              # the same app from a config file

Every field of syvla.serving.launch.ServeRunConfig is a flag (its Serve deployment options under
--deployment.*); --address picks the Ray cluster ("" = $RAY_ADDRESS, else a new local instance). Robots use
syvla.client.PolicyClient; the RL controller updates weights with
syvla.serving.deployment.publish_weights(app_name, ckpt_dir, version).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling pipelines (common)

import syvla  # noqa: E402,F401  (installs the torchvision shim first, as in every syvla process)
from common import RayConfig, connect_ray  # noqa: E402
from syvla.cli import parse_configs  # noqa: E402
from syvla.serving.launch import (ServeRunConfig, check_ingress, prepare_ingress, resolve_checkpoint,  # noqa: E402
                                  serve_config, serve_policy)
from syvla.sim import metaworld as mw  # noqa: E402


def parse_config(argv=None) -> tuple[ServeRunConfig, RayConfig]:
    return parse_configs(argv, __doc__, ServeRunConfig(), RayConfig())


def main(argv=None) -> int:
    cfg, ray_cfg = parse_config(argv)
    checkpoint, version = resolve_checkpoint(cfg, embodiments=(mw.EMBODIMENT,))  # a debug one is for Meta-World
    server = serve_config(cfg, checkpoint, version)
    prepare_ingress(cfg)  # before a local cluster starts; on a running one check_ingress decides
    connect_ray(ray_cfg.address, ray_cfg.num_cpus)
    check_ingress(cfg)
    from ray import serve

    # After ray.init, which installs a handler of its own: `kill`, systemd or a job stop (SIGTERM) shuts
    # Serve down as Ctrl-C does, also while the app is still starting.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        url = serve_policy(cfg, server)
        print(f"[serve] {cfg.app_name}: policy version {version} from {checkpoint} at {url} "
              f"(replay: {server.replay_dir or 'off'}, API key: {'on' if server.api_key else 'off'})", flush=True)
        if not cfg.blocking:
            return 0
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("[serve] shutting down", flush=True)
        serve.shutdown()
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    raise SystemExit(main())
