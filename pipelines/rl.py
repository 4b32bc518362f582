"""Improve a served SyVLA policy with Similar-Sample Guided RL (§3.3, App. A) on simulated Meta-World robots.

    python pipelines/rl.py                                   # debug: reach-v3, 3 RL episodes x 6 rollouts
    python pipelines/rl.py --retrieval.mode random           # ablation "w/o Similar Sample" (Table 3)
    python pipelines/rl.py --use_expert_data false           # ablation "w/o Expert Dataset"
    python pipelines/rl.py --advantage.expert_gae true       # ablation "w/ standard Advantage"
    python pipelines/rl.py --ablate_decoupling true          # ablation "w/o Intention Decoupling"
    python pipelines/rl.py --run.name rl-a --run.robots 0    # real robots: they post 0/1 rewards themselves
    ray job submit -- python pipelines/rl.py --preset paper --clip_checkpoint /ckpt/vit_b_32.bin

Starts Serve from the newest fine-tuned checkpoint (checkpoints/finetune, then checkpoints/pretrain, else an
untrained debug one, with a warning), simulated robots that drive the endpoint and post rewards, and the RL
actors; then runs the controller (syvla.rl.controller). Every RLConfig field is a flag (--update_steps,
--fpo.clip_eps, ...) and every RLRunConfig field one under --run. (--run.tasks, --run.robots, ...).
Outputs in runs/rl/<name>/: state.json (re-running the same command resumes), metrics.json,
success_rate.png, policies/v<N>/ (the published checkpoints), replay/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling pipelines (common)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the syvla package when run from anywhere

import syvla  # noqa: E402,F401  (installs the torchvision shim first)
from common import connect_ray  # noqa: E402
from syvla.rl.config import RL_PRESETS, RLConfig, rl_preset  # noqa: E402
from syvla.rl.launch import RLRunConfig  # noqa: E402
from syvla.cli import add_dataclass_args, apply_overrides  # noqa: E402

APP_NAME = "syvla-rl"


def parse(argv=None) -> tuple[RLConfig, RLRunConfig]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="debug", choices=sorted(RL_PRESETS))
    known, _ = pre.parse_known_args(argv)
    parser = argparse.ArgumentParser(description=__doc__, parents=[pre],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, RLConfig)
    add_dataclass_args(parser, RLRunConfig, prefix="run.")
    args = vars(parser.parse_args(argv))
    args.pop("preset")
    run_args = {k[len("run."):]: v for k, v in args.items() if k.startswith("run.")}
    try:
        cfg = apply_overrides(rl_preset(known.preset), {k: v for k, v in args.items() if not k.startswith("run.")})
        return cfg, apply_overrides(RLRunConfig(), run_args)
    except (ValueError, KeyError) as e:
        parser.error(str(e))


def main(argv=None) -> int:
    cfg, run = parse(argv)
    from ray import serve

    from syvla.model.checkpoint import read_config
    from syvla.rl.actors import serve_publisher, start_workers, stop_workers
    from syvla.rl.controller import RLController
    from syvla.rl.launch import SimRobots, load_experts, resolve_policy
    from syvla.serving.launch import ServeRunConfig, serve_config, serve_policy

    ckpt, version = resolve_policy(run)
    policy_cfg = read_config(ckpt)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    experts = load_experts(run, policy_cfg.expert.chunk_len, cfg.max_expert_episodes)
    connect_ray(run.address)
    serving = ServeRunConfig(checkpoint=str(ckpt), version=version, app_name=APP_NAME, port=run.port,
                             num_replicas=run.replicas, num_cpus=run.replica_cpus, device=cfg.device,
                             replay_dir=str(run.run_dir / "replay"), blocking=False)
    url = serve_policy(serving, serve_config(serving, ckpt, version))
    print(f"[rl] {cfg.ablation}: serving v{version} at {url} on {run.replicas} replica(s); "
          f"{len(experts)} expert frames of {experts.num_episodes} demos; run dir {run.run_dir}", flush=True)
    workers = start_workers(cfg, ckpt, run.run_dir / "replay", experts)
    robots = SimRobots(run, url) if run.robots else None
    try:
        state = RLController(cfg, workers, run.run_dir, ckpt, version, policy_cfg, publish=serve_publisher(APP_NAME),
                             on_collect=robots).run()
        if robots is not None:
            robots.join()
    finally:
        stop_workers(workers)
        serve.shutdown()
    rates = {f"v{m['version']}": round(m["success_rate"], 3) for m in state.metrics}
    if state.final:
        rates[f"v{state.final['version']}"] = round(state.final["success_rate"], 3)
    print(f"[rl] success rate by policy version: {json.dumps(rates)}; metrics: {run.run_dir / 'metrics.json'}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
