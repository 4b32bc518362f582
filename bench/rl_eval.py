"""Closed-loop success (in process, no Serve) and open-loop expert error of policy checkpoints on one task:
the paired before/after comparison of RL runs (docs/rl.md).

    python bench/rl_eval.py --task reach-v3 --seed 1000 --episodes 30 \
        base=checkpoints/pretrain/pt1 similar=runs/rl/reach-similar/policies/v3 random=runs/rl/reach-random/policies/v3

Every checkpoint sees the same layouts (seeds seed .. seed + episodes - 1) and the same flow noise per step,
so differences come from the weights alone. Prints one JSON line per checkpoint.
"""

from __future__ import annotations

import argparse
import json

import syvla  # noqa: F401  (installs the torchvision shim first)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="name=checkpoint_dir")
    p.add_argument("--task", default="reach-v3")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--max_steps", type=int, default=300)
    p.add_argument("--execute_steps", type=int, default=10)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--heldout_episodes", type=int, default=4, help="expert episodes for the open-loop error")
    args = p.parse_args(argv)
    import torch

    from syvla.model.checkpoint import load_checkpoint
    from syvla.model.policy import Policy
    from syvla.sim.episodes import EpisodeConfig, evaluate_policy
    from syvla.sim.evaluate import heldout_samples, open_loop_error

    torch.set_num_threads(1)
    held = heldout_samples(args.task, range(5000, 5000 + args.heldout_episodes), args.image_size, 50) \
        if args.heldout_episodes else []
    for item in args.checkpoints:
        name, path = item.split("=", 1)
        policy = Policy.load(path)
        cfg = EpisodeConfig(tasks=(args.task,), episodes=args.episodes, seed=args.seed, max_steps=args.max_steps,
                            execute_steps=args.execute_steps, image_size=args.image_size)
        r = evaluate_policy(policy, cfg)
        row = {"name": name, "checkpoint": path, "version": policy.policy_version, "success_rate": r["success_rate"],
               "episodes": r["episodes"], "failed_seeds": [e["seed"] for e in r["results"] if not e["success"]]}
        if held:
            model, stats, _ = load_checkpoint(path)
            row["open_loop_mse"] = open_loop_error(model, stats, held)["policy_mse"]
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
