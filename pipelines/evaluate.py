"""Evaluate a policy checkpoint: Meta-World success per task, and open-loop action error.

    python pipelines/evaluate.py --checkpoint checkpoints/finetune/finetune-debug --tasks reach-v3 --episodes 20
    python pipelines/evaluate.py --endpoint http://127.0.0.1:8000 --tasks reach-v3    # a served policy
    python pipelines/evaluate.py --checkpoint CKPT --episodes 0 --heldout_data HELDOUT_PREPARED   # any robot, open loop

In-process mode loads the checkpoint with `Policy` and drives a `SimRobot` (no Ray);
episode k of a task uses layout seed --seed + k. The open-loop error compares sampled
action chunks with expert chunks of held-out episodes (seeds --heldout_seed + k) against
the mean-action baseline; with --heldout_data, on the robot datasets of a prepared root
instead (your own robot's held-out episodes). Endpoint mode runs the same episodes through the robot API
(syvla.sim.episodes.evaluate_endpoint). Flags: every field of syvla.sim.evaluate.EvalConfig
and syvla.sim.episodes.EpisodeConfig; --json PATH writes the full result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the syvla package when run from anywhere

import syvla  # noqa: E402,F401  (installs the torchvision shim first)
from syvla.cli import add_dataclass_args, apply_overrides  # noqa: E402
from syvla.sim.episodes import EpisodeConfig  # noqa: E402
from syvla.sim.evaluate import EvalConfig, evaluate  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, EvalConfig)
    add_dataclass_args(parser, EpisodeConfig, defaults=EpisodeConfig())
    parser.add_argument("--json", default="", help="write the full result (every episode) to this file")
    args = vars(parser.parse_args(argv))
    out_json = args.pop("json")
    try:
        cfg = apply_overrides(EvalConfig(checkpoint="unset"), args)
        episodes = apply_overrides(EpisodeConfig(), args)
    except ValueError as e:
        parser.error(str(e))
    if cfg.checkpoint == "unset" and not cfg.endpoint:
        parser.error("give --checkpoint DIR or --endpoint URL")
    result = evaluate(cfg, episodes)
    closed = result.get("closed_loop")
    if closed:
        from syvla.intervals import SuccessRate

        last = episodes.seed + episodes.episodes - 1
        for task, r in closed["per_task_success"].items():
            rate = SuccessRate(r["successes"], r["n"])
            print(f"[evaluate] {task}: success {rate} (layout seeds {episodes.seed}..{last})")
    for task, r in result.get("open_loop", {}).items():
        verdict = "beats" if r["ratio"] <= 0.5 else "does NOT beat"
        print(f"[evaluate] {task}: open-loop MSE {r['policy_mse']:.4f} vs mean-action {r['baseline_mse']:.4f} "
              f"(ratio {r['ratio']:.3f}: {verdict} the baseline by half)")
    if out_json:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
