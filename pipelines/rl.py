"""Improve a served SyVLA policy with Similar-Sample Guided RL (§3.3, App. A) on simulated Meta-World robots.

    python pipelines/rl.py                                   # debug: reach-v3, 3 RL episodes x 6 rollouts
    python pipelines/rl.py --retrieval.mode random           # ablation "w/o Similar Sample" (Table 3)
    python pipelines/rl.py --use_expert_data false           # ablation "w/o Expert Dataset"
    python pipelines/rl.py --advantage.expert_gae true       # ablation "w/ standard Advantage"
    python pipelines/rl.py --ablate_decoupling true          # ablation "w/o Intention Decoupling"
    python pipelines/rl.py --run.name rl-a --run.robots 0    # real robots: 0/1 rewards from <url>/operator or their code
    python pipelines/rl.py --run.operator sim                # simulated robots, a simulated operator labels
    ray job submit -- python pipelines/rl.py --preset paper --clip_checkpoint /ckpt/vit_b_32.bin

Starts Serve from the newest fine-tuned checkpoint (checkpoints/finetune, then checkpoints/pretrain, else an
untrained debug one, with a warning), simulated robots that drive the endpoint and post rewards, and the RL
actors; then runs the controller (syvla.rl.controller). Every RLConfig field is a flag (--update_steps,
--fpo.clip_eps, ...), every RLRunConfig field one under --run. (--run.tasks, --run.robots, ...), and
--address picks the Ray cluster ("" = $RAY_ADDRESS, else a new local instance).
Outputs in runs/rl/<name>/: state.json (re-running the same command resumes), metrics.json,
success_rate.png, policies/v<N>/ (the published checkpoints), replay/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling pipelines (common)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the syvla package when run from anywhere

import syvla  # noqa: E402,F401  (installs the torchvision shim first)
from common import RayConfig, connect_ray  # noqa: E402
from syvla.cli import parse_configs  # noqa: E402
from syvla.rl.config import RL_PRESETS, RLConfig  # noqa: E402
from syvla.rl.launch import RLRunConfig  # noqa: E402

APP_NAME = "syvla-rl"


def parse(argv=None) -> tuple[RLConfig, RLRunConfig, RayConfig]:
    return parse_configs(argv, __doc__, ("run", RLRunConfig()), RayConfig(), presets=RL_PRESETS, preset="debug")


def main(argv=None) -> int:
    cfg, run, ray_cfg = parse(argv)
    from ray import serve

    from syvla.model.checkpoint import read_config
    from syvla.rl.actors import rl_metrics_exporter, serve_publisher, start_workers, stop_workers
    from syvla.rl.controller import RLController
    from syvla.rl.launch import SimRobots, load_experts, resolve_policy
    from syvla.rl.metrics import METRICS_FILE
    from syvla.serving.config import DeploymentConfig
    from syvla.serving.launch import ServeRunConfig, serve_config, serve_policy

    if cfg.use_expert_data and cfg.retrieval.mode == "similar" and cfg.clip_model == "debug" and not cfg.clip_checkpoint:
        print("[rl] WARNING: the retriever's CLIP is the untrained debug encoder (--clip_checkpoint ''): train one "
              "on the imitation set first (pipelines/train_retriever.py); RL gained only with a trained one "
              "(docs/rl.md)", flush=True)
    try:
        ckpt, version = resolve_policy(run)
    except FileNotFoundError as e:
        raise SystemExit(f"rl.py: {e}")
    policy_cfg = read_config(ckpt)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    experts = load_experts(run, policy_cfg.expert.chunk_len, cfg.max_expert_episodes)
    connect_ray(ray_cfg.address, ray_cfg.num_cpus)
    serving = ServeRunConfig(checkpoint=str(ckpt), version=version, app_name=APP_NAME, host=run.host, port=run.port,
                             deployment=DeploymentConfig(num_replicas=run.replicas, num_cpus=run.replica_cpus),
                             device=cfg.device, replay_dir=str(run.replay_dir), blocking=False)
    url = serve_policy(serving, serve_config(serving, ckpt, version))
    print(f"[rl] {cfg.ablation}: serving v{version} at {url} on {run.replicas} replica(s); "
          f"{len(experts)} expert frames of {experts.num_episodes} demos; run dir {run.run_dir}; "
          f"operator page {url}/operator", flush=True)
    workers = start_workers(cfg, ckpt, run.replay_dir, experts)
    robots = SimRobots(run, url) if run.robots else None
    try:
        state = RLController(cfg, workers, run.run_dir, ckpt, version, policy_cfg, publish=serve_publisher(APP_NAME),
                             on_collect=robots, on_episode=rl_metrics_exporter(run.name)).run()
        if robots is not None:
            robots.join()
    finally:
        stop_workers(workers)
        serve.shutdown()
    rates = {f"v{m['version']}": round(m["success_rate"], 3) for m in state.metrics}
    if state.final:
        rates[f"v{state.final['version']}"] = round(state.final["success_rate"], 3)
    print(f"[rl] success rate by policy version: {json.dumps(rates)}; metrics: {run.run_dir / METRICS_FILE}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
