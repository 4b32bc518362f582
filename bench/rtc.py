"""Real-time chunking in Meta-World: success and seam jumps under injected network delay, per mode.

    python bench/rtc.py --checkpoint runs/rl_gain/finetuned/rl-gain-push-v3       # a fine-tuned push policy
    python bench/rtc.py                          # builds the policies first (as bench/rl_gain.py does)
    python bench/rtc.py --episodes 20 --delays_ms 0 200 --modes sync naive rtc

Each episode runs `syvla.realtime.RealtimeController` in real time at Meta-World's control rate (80 Hz)
against the policy in process, with `--delays_ms` added to every request (the network); the held-out
layouts are syvla.sim.trusted's (layout seeds 100000 + k), the same for every mode and delay. Modes:
sync (the robot stops and waits for every chunk), naive (asynchronous, chunks switched without
inpainting), rtc (asynchronous, the request carries the committed prefix and the expected delay, the
server inpaints with guided sampling), trained (as rtc, served by a policy fine-tuned with training-time
action conditioning, `--model.flow.prefix_conditioning`, which takes the delay's steps clean instead of
guiding), trained_sync (that policy, synchronous: its own reference).

The seam jump is the issue's |a_first_new - a_last_old| (max over dims): the executed step at a chunk
switch. The hand-off is stricter: the largest executed step from the switch through the last step the new
chunk took over from the committed prefix (the switch step alone for naive and sync). Both are compared
with the p95 of within-chunk steps |a[i+1] - a[i]| of the same chunks; the gap to the old plan is
|first new action - the old chunk's action for the same step| (what inpainting aims at).
Last line: `rtc_seam_jump_ratio: X` = mean seam jump with rtc / naive at 200 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import syvla  # noqa: E402,F401  (installs the torchvision shim first)
from steps import build_finetuned, pipeline_steps  # noqa: E402

log, run = pipeline_steps("rtc")


MODES = ("sync", "naive", "rtc", "trained", "trained_sync")
CONTROLLER_MODE = {"trained": "rtc", "trained_sync": "sync"}  # the robot's side of the modes of a conditioned policy
CONDITIONING = ("--model.expert.step_times", "true", "--model.flow.prefix_conditioning", "0.5")


def episode(policy, task: str, seed: int, mode: str, delay_s: float, hz: float, execute_steps: int,
            max_steps: int, soft_steps: int | None = None, max_in_flight: int = 1) -> dict:
    """One held-out episode through syvla.sim.episodes.run_realtime (the simulated robots' real-time runner),
    with the seam figures read from the controller's stats."""
    import numpy as np

    from syvla.sim.episodes import EpisodeConfig, LocalPolicy, run_realtime
    from syvla.sim.robot import SimRobot

    mode = CONTROLLER_MODE.get(mode, mode)
    cfg = EpisodeConfig(tasks=(task,), episodes=1, max_steps=max_steps, execute_steps=execute_steps, image_size=64,
                        realtime=mode, control_hz=hz, delay_ms=1e3 * delay_s,
                        max_in_flight=max_in_flight if mode != "sync" else 1)
    with SimRobot(image_size=64, max_steps=max_steps) as robot:
        robot.reset(task, seed)
        stats, _, _ = run_realtime(LocalPolicy(policy), robot, robot.instruction, seed, cfg, soft_steps=soft_steps)
        chunks, executed = stats.chunks, stats.executed
        steps = [np.abs(np.diff(c, axis=0)).max(axis=1) for c in chunks]
        # The hand-off: the largest step of the executed actions from the switch through the last step the
        # new chunk took over from the committed prefix (naive and sync: the switch step alone).
        jumps = np.r_[0.0, np.abs(np.diff(np.asarray(executed), axis=0)).max(axis=1)] if executed else np.zeros(0)
        handoffs = []
        for at, planned, elapsed in stats.switches[1:]:
            end = at + (max(0, min(planned, 50) - elapsed) if mode == "rtc" else 0)
            if 0 < at < len(jumps):
                handoffs.append(float(jumps[at:min(end, len(jumps) - 1) + 1].max()))
        # The seam, |a_first_new - a_last_old| per switch, is the controller's own record.
        return {"seed": seed, "success": bool(robot.success), "steps": stats.steps, "late_steps": stats.late_steps,
                "seams": stats.seams, "handoffs": handoffs, "plan_gaps": stats.plan_gaps, "within_p95": float(np.quantile(np.concatenate(steps), 0.95)),
                "latency_ms": [1e3 * x for x in stats.latencies_s],
                "tick_lateness_p95_ms": 1e3 * float(np.quantile(stats.tick_lateness_s, 0.95))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="", help="fine-tuned policy ('' = build one under --work)")
    p.add_argument("--work", default="runs/rl_gain", help="where a policy is built (shared with bench/rl_gain.py)")
    p.add_argument("--task", default="push-v3")
    p.add_argument("--episodes", type=int, default=50, help="held-out layouts per mode and delay")
    p.add_argument("--delays_ms", type=float, nargs="+", default=[0, 100, 200, 400])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--conditioned_checkpoint", default="",
                   help="the trained modes' policy, fine-tuned with training-time action conditioning ('' = build "
                        "it under --work from the same pretraining: finetune.py " + " ".join(CONDITIONING) + ")")
    p.add_argument("--execute_steps", type=int, default=10, help="actions of a chunk before the next request")
    p.add_argument("--max_steps", type=int, default=300)
    p.add_argument("--control_hz", type=float, default=80.0, help="Meta-World's own rate (12.5 ms per step)")
    p.add_argument("--max_in_flight", type=int, default=1,
                   help="asynchronous modes: act calls waiting for their answers at once (pipelined when the round "
                        "trip is long against the chunk)")
    p.add_argument("--soft_steps", type=int, default=-1, help="rtc: the prefix sent is the expected delay plus this "
                                                               "many actions (-1 = the whole rest of the chunk)")
    p.add_argument("--json", default="", help="write every episode's figures here")
    args = p.parse_args(argv)
    if 200.0 not in args.delays_ms or not {"naive", "rtc"} <= set(args.modes):
        p.error("the headline needs --delays_ms to include 200 and --modes to include naive and rtc")

    import numpy as np
    import torch

    from syvla.intervals import SuccessRate
    from syvla.model.policy import Policy
    from syvla.sim.trusted import EVAL_SEED

    torch.set_num_threads(1)
    ckpt = Path(args.checkpoint) if args.checkpoint else build_finetuned(
        run, (ROOT / args.work).resolve(), args.task, demos=20, pretrain_steps=600, finetune_steps=400)
    policies = {"plain": Policy.load(ckpt)}
    if {"trained", "trained_sync"} & set(args.modes):
        conditioned = Path(args.conditioned_checkpoint) if args.conditioned_checkpoint else build_finetuned(
            run, (ROOT / args.work).resolve(), args.task, demos=20, pretrain_steps=600, finetune_steps=400,
            variant="conditioned", flags=CONDITIONING)
        policies["conditioned"] = Policy.load(conditioned)
        if not policies["conditioned"].config.expert.step_times:
            p.error(f"--conditioned_checkpoint {conditioned} was not trained with action conditioning "
                    "(its expert has no step_times)")
    results = {}
    for delay in args.delays_ms:
        for mode in args.modes:
            policy = policies["conditioned" if mode.startswith("trained") else "plain"]
            eps = [episode(policy, args.task, EVAL_SEED + k, mode, delay / 1e3, args.control_hz, args.execute_steps,
                           args.max_steps, soft_steps=None if args.soft_steps < 0 else args.soft_steps,
                           max_in_flight=args.max_in_flight)
                   for k in range(args.episodes)]
            seams = np.concatenate([e["seams"] for e in eps if e["seams"]] or [np.zeros(0)])
            handoffs = np.concatenate([e["handoffs"] for e in eps if e["handoffs"]] or [np.zeros(0)])
            gaps = np.concatenate([e["plan_gaps"] for e in eps if e["plan_gaps"]] or [np.zeros(0)])
            within = float(np.mean([e["within_p95"] for e in eps]))
            rate = SuccessRate(sum(e["success"] for e in eps), len(eps))
            r = results[f"{mode}@{delay:g}"] = {
                "mode": mode, "delay_ms": delay, "success": rate.to_dict(), "outcomes": [e["success"] for e in eps],
                "seam_mean": float(seams.mean()) if seams.size else None, "within_step_p95": within,
                "handoff_mean": float(handoffs.mean()) if handoffs.size else None,
                "plan_gap_mean": float(gaps.mean()) if gaps.size else None,
                "late_steps": int(sum(e["late_steps"] for e in eps)),
                "latency_ms_p50": float(np.median(np.concatenate([e["latency_ms"] for e in eps]))),
                "tick_lateness_p95_ms": float(np.max([e["tick_lateness_p95_ms"] for e in eps]))}
            seam = "-" if r["seam_mean"] is None else f"{r['seam_mean']:.3f} ({r['seam_mean'] / within:.2f} x p95 step)"
            gap = "-" if r["plan_gap_mean"] is None else f"{r['plan_gap_mean']:.3f}"
            hand = "-" if r["handoff_mean"] is None else f"{r['handoff_mean'] / within:.2f} x p95 step"
            log(f"{mode:5s} +{delay:4.0f} ms: success {rate}; seam jump {seam}; hand-off {hand}; "
                f"gap to the old plan {gap}; "
                f"late steps {r['late_steps']}; "
                f"latency p50 {r['latency_ms_p50']:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(ckpt), "args": vars(args), "results": results},
                                              indent=1))
    if "sync@0" in results and "rtc@200" in results:
        from syvla.intervals import paired_comparison

        for ref, mode in (("sync@0", "rtc@200"), ("trained_sync@0", "trained@200"), ("sync@0", "trained@200")):
            if ref in results and mode in results:
                c = paired_comparison(results[ref]["outcomes"], results[mode]["outcomes"])
                log(f"{mode} vs {ref}: {100 * c['difference']:+.0f} points (same layouts; "
                    f"{c['b_only']} gained / {c['a_only']} lost, McNemar p = {c['mcnemar_p']:.3f})")
    def ratio(mode: str, figure: str) -> float:  # against naive at 200 ms; nan when either saw no switch
        a, b = results.get(mode, {}).get(figure), results["naive@200"][figure]
        return float("nan") if a is None or not b else a / b

    if "trained@200" in results:
        log(f"trained / naive seam jump at 200 ms: {ratio('trained@200', 'seam_mean'):.3f}")
    log(f"rtc / naive hand-off at 200 ms: {ratio('rtc@200', 'handoff_mean'):.3f}")
    if np.isnan(ratio("rtc@200", "seam_mean")):
        log("no chunk switch at 200 ms in rtc or naive: the episodes were too short for a seam")
    print(f"rtc_seam_jump_ratio: {ratio('rtc@200', 'seam_mean'):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
