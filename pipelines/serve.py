"""Serve a SyVLA policy to robots over HTTP (Ray Serve): the robot API of docs/serving.md.

    python pipelines/serve.py                        # newest checkpoint under checkpoints/ (or a new debug one)
    python pipelines/serve.py --checkpoint checkpoints/ft --num_replicas 2 --port 8000
    ray job submit -- python pipelines/serve.py --device cuda --num_gpus 1 --blocking false
    serve run cluster/serve_config.yaml              # the same app from a config file

Every field of syvla.serving.launch.ServeRunConfig is a flag. Robots use
syvla.client.PolicyClient; the RL controller updates weights with
syvla.serving.deployment.publish_weights(app_name, ckpt_dir, version).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import typing

import syvla  # noqa: F401  (installs the torchvision shim first, as in every syvla process)
from syvla.serving.launch import ServeRunConfig, resolve_checkpoint, serve_config, serve_policy


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_config(argv=None) -> ServeRunConfig:
    """argparse generated from the dataclass: one --flag per field, defaults from the dataclass."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(ServeRunConfig)
    for f in dataclasses.fields(ServeRunConfig):
        tp = hints[f.name]
        parser.add_argument(f"--{f.name}", type=_bool if tp is bool else tp, default=f.default,
                            metavar="BOOL" if tp is bool else None, help=f"(default: {f.default!r})")
    try:
        return ServeRunConfig(**vars(parser.parse_args(argv)))
    except ValueError as e:
        parser.error(str(e))


def connect(cfg: ServeRunConfig):
    import ray

    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS", "")
        if address:
            ray.init(address=address)  # an existing cluster, e.g. under `ray job submit`
        else:
            ray.init(include_dashboard=False)
    return ray


def main(argv=None) -> int:
    cfg = parse_config(argv)
    checkpoint, version = resolve_checkpoint(cfg)
    server = serve_config(cfg, checkpoint, version)
    connect(cfg)
    from ray import serve

    url = serve_policy(cfg, server)
    print(f"[serve] {cfg.app_name}: policy version {version} from {checkpoint} at {url} "
          f"(replay: {server.replay_dir or 'off'}, API key: {'on' if server.api_key else 'off'})", flush=True)
    if not cfg.blocking:
        return 0
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("[serve] shutting down", flush=True)
        serve.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
