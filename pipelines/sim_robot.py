"""Simulated Meta-World robots driving the policy server through the robot client.

    python pipelines/sim_robot.py --url http://127.0.0.1:8000 --robots 4 --tasks reach-v3 push-v3
    python pipelines/sim_robot.py                  # no --url: starts a local server first (pipelines/serve.py's default)

N robot processes each run episodes: ask for an action chunk, execute it,
repeat until success or max_steps, then post the success as the episode's 0/1
reward (so the episodes land in the replay buffer as RL data). Prints the
success rate per task. Flags: every field of syvla.sim.episodes.EpisodeConfig
(here: 2 episodes per task from seed 0, 128 px, whole chunks, up to Meta-World's
500 steps) and of syvla.sim.episodes.Endpoint, plus --robots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling pipelines (common)

import syvla  # noqa: E402,F401  (installs the torchvision shim first, as in every syvla process)
from syvla.cli import add_dataclass_args, apply_overrides  # noqa: E402
from syvla.sim import metaworld as mw  # noqa: E402
from syvla.sim.episodes import Endpoint, EpisodeConfig, evaluate_endpoint  # noqa: E402

# Robots drive whole chunks at 128 px for the full Meta-World episode length.
ROBOT_EPISODES = EpisodeConfig(episodes=2, seed=0, max_steps=mw.MAX_PATH_LENGTH, execute_steps=0, image_size=128)


def parse_config(argv=None) -> tuple[EpisodeConfig, Endpoint, bool, int, str, int]:
    """(episodes, endpoint, local: no --url given, robots, json_out, port)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, EpisodeConfig, defaults=ROBOT_EPISODES)
    add_dataclass_args(parser, Endpoint, defaults=Endpoint())
    parser.add_argument("--robots", type=int, default=2, help="robot processes (default: 2)")
    parser.add_argument("--port", type=int, default=8000, help="port of the local server started without --url")
    parser.add_argument("--json_out", default="", help="write the summary and every episode here as JSON")
    args = vars(parser.parse_args(argv))
    robots, json_out, port = args.pop("robots"), args.pop("json_out"), args.pop("port")
    if robots <= 0:
        parser.error("--robots must be > 0")
    try:
        episodes, endpoint = apply_overrides(ROBOT_EPISODES, args), apply_overrides(Endpoint(), args)
    except ValueError as e:
        parser.error(str(e))
    return episodes, endpoint, "url" not in args, robots, json_out, port


def start_local_server(port: int) -> str:
    """No --url: a local Ray + Serve with the newest (or a new debug) checkpoint, as pipelines/serve.py does."""
    from common import connect_ray

    from syvla.serving.config import DeploymentConfig
    from syvla.serving.launch import ServeRunConfig, resolve_checkpoint, serve_config, serve_policy

    run = ServeRunConfig(deployment=DeploymentConfig(num_replicas=1), port=port, blocking=False)
    ckpt, version = resolve_checkpoint(run, embodiments=(mw.EMBODIMENT,))
    connect_ray()
    return serve_policy(run, serve_config(run, ckpt, version))


def main(argv=None) -> int:
    episodes, endpoint, local, robots, json_out, port = parse_config(argv)
    if local:
        endpoint = dataclasses.replace(endpoint, url=start_local_server(port))
    try:
        print(f"[sim_robot] {robots} robots x {len(episodes.tasks)} tasks x {episodes.episodes} episodes -> "
              f"{endpoint.url}", flush=True)
        t0 = time.time()
        summary = evaluate_endpoint(endpoint, episodes, robots=robots)
    finally:
        if local:
            from ray import serve

            serve.shutdown()
    from syvla.intervals import SuccessRate

    for task, r in summary["per_task_success"].items():
        print(f"[sim_robot] {task:32s} success {SuccessRate(r['successes'], r['n'])}")
    overall = SuccessRate(summary["success"]["successes"], summary["success"]["n"])
    print(f"[sim_robot] overall success {overall} "
          f"({summary['aborted']} aborted: policy version retired mid-episode) in "
          f"{time.time() - t0:.0f} s; act p50 {summary['act_ms_p50']:.1f} ms, p99 {summary['act_ms_p99']:.1f} ms; "
          f"policy versions {summary['policy_versions']}", flush=True)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
