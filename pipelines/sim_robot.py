"""Simulated Meta-World robots driving the policy server through the robot client.

    python pipelines/sim_robot.py --url http://127.0.0.1:8000 --robots 4 --tasks reach-v3 push-v3
    python pipelines/sim_robot.py                  # no --url: starts a local server first (pipelines/serve.py's default)

N robot processes each run episodes: ask for an action chunk, execute it,
repeat until success or max_steps, then post the success as the episode's 0/1
reward (so the episodes land in the replay buffer as RL data). Prints the
success rate per task. Every field of EndpointEvalConfig is a flag, plus --robots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling pipelines (common)

import syvla  # noqa: E402,F401  (installs the torchvision shim first, as in every syvla process)
from syvla.serving.evaluate_endpoint import EndpointEvalConfig, evaluate_endpoint  # noqa: E402


def parse_config(argv=None) -> tuple[EndpointEvalConfig, int, str, int]:
    """argparse generated from the dataclass: one --flag per field, defaults from the dataclass."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(EndpointEvalConfig)
    for f in dataclasses.fields(EndpointEvalConfig):
        tp = hints[f.name]
        if typing.get_origin(tp) is tuple:
            parser.add_argument(f"--{f.name}", nargs="+", default=list(f.default), help=f"(default: {f.default})")
        else:
            parser.add_argument(f"--{f.name}", type=(lambda s: s.lower() in ("1", "true", "yes")) if tp is bool
                                else tp, default=f.default, help=f"(default: {f.default!r})")
    parser.set_defaults(url="")
    parser.add_argument("--robots", type=int, default=2, help="robot processes (default: 2)")
    parser.add_argument("--port", type=int, default=8000, help="port of the local server started without --url")
    parser.add_argument("--json_out", default="", help="write the summary and every episode here as JSON")
    args = vars(parser.parse_args(argv))
    robots, json_out, port = args.pop("robots"), args.pop("json_out"), args.pop("port")
    if robots <= 0:
        parser.error("--robots must be > 0")
    try:
        return EndpointEvalConfig(**args), robots, json_out, port
    except ValueError as e:
        parser.error(str(e))


def start_local_server(port: int) -> str:
    """No --url: a local Ray + Serve with the newest (or a new debug) checkpoint, as pipelines/serve.py does."""
    from common import connect_ray

    from syvla.serving.config import DeploymentConfig
    from syvla.serving.launch import ServeRunConfig, resolve_checkpoint, serve_config, serve_policy

    run = ServeRunConfig(deployment=DeploymentConfig(num_replicas=1), port=port, blocking=False)
    ckpt, version = resolve_checkpoint(run)
    connect_ray()
    return serve_policy(run, serve_config(run, ckpt, version))


def main(argv=None) -> int:
    cfg, robots, json_out, port = parse_config(argv)
    local = not cfg.url
    if local:
        cfg = dataclasses.replace(cfg, url=start_local_server(port))
    try:
        print(f"[sim_robot] {robots} robots x {len(cfg.tasks)} tasks x {cfg.episodes_per_task} episodes -> {cfg.url}",
              flush=True)
        t0 = time.time()
        summary = evaluate_endpoint(cfg, robots=robots)
    finally:
        if local:
            from ray import serve

            serve.shutdown()
    for task, rate in summary["per_task"].items():
        print(f"[sim_robot] {task:32s} success {rate:.2f}")
    print(f"[sim_robot] overall success {summary['success_rate']:.3f} over {summary['episodes']} episodes "
          f"({summary['aborted']} aborted: policy version retired mid-episode) in "
          f"{time.time() - t0:.0f} s; act p50 {summary['act_ms_p50']:.1f} ms, p99 {summary['act_ms_p99']:.1f} ms; "
          f"policy versions {summary['policy_versions']}", flush=True)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
