"""Does RL improve the policy? Held-out paired success before and after the default RL recipe, beside
the "w/o RL" control of Table 3 (continued imitation on as many extra expert episodes as RL rollouts).

    python bench/rl_gain.py                                 # push-v3, ~60 min on 2 CPUs
    python bench/rl_gain.py --checkpoint runs/rl_tasks/finetuned/rl-tasks-push-v3 --expert_data runs/rl_tasks/raw
    python bench/rl_gain.py --quick                         # every step at toy size: runs, measures nothing

Steps (each skipped when its output exists, so an interrupted run resumes; all through the pipelines):
1. the fine-tuned checkpoint: `--checkpoint`, else built here (collect, pretrain, fine-tune on the task);
2. the retriever: RL's CLIP encoder fine-tuned on the imitation set (`pipelines/train_retriever.py`,
   `--retriever_steps`; skipped when `--rl_flags` names a `--clip_checkpoint`);
3. RL: `pipelines/rl.py` with its defaults (the recipe) and that retriever, `--rl_episodes` x `--rollouts` on
   simulated robots through the Serve endpoint (layouts from seed 1000, disjoint from the evaluation's);
4. the control: as many new expert demos as RL had rollouts, fine-tuning from the same checkpoint on them;
5. `pipelines/evaluate.py` of all three on the same `--episodes` held-out layouts (syvla.sim.trusted: same
   layouts and flow noise for every checkpoint), compared pair by pair (Wilson intervals, exact McNemar);
6. the RL policy once more through the endpoint (`pipelines/serve.py`, `evaluate.py --endpoint`): the same
   episodes must give the same outcomes as in process.
Last line: `rl_success_gain: X`, percentage points of held-out success after RL minus before.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import syvla  # noqa: E402,F401  (installs the torchvision shim first)
from steps import build_finetuned, pipeline_steps  # noqa: E402
from syvla.sim.trusted import EVAL_SEED  # noqa: E402

RL_SEED = 1000  # RLRunConfig.seed: RL episode e's robots use layouts 1000 + ...


log, run = pipeline_steps("rl_gain")


def evaluate(ckpt: Path, task: str, episodes: int, report: Path) -> dict:
    if not report.exists():
        run("pipelines/evaluate.py", "--checkpoint", str(ckpt), "--tasks", task, "--episodes", str(episodes),
            "--seed", str(EVAL_SEED), "--heldout_episodes", "0", "--json", str(report))
    return json.loads(report.read_text())["closed_loop"]


def evaluate_served(ckpt: Path, task: str, episodes: int, report: Path, port: int) -> dict:
    """The same held-out episodes through the robot API of `pipelines/serve.py` serving `ckpt`."""
    import httpx

    if not report.exists():
        cmd = [sys.executable, "pipelines/serve.py", "--checkpoint", str(ckpt), "--port", str(port),
               "--app_name", "rl-gain-eval"]
        log("$ python " + " ".join(cmd[1:]) + " &")
        server = subprocess.Popen(cmd, cwd=ROOT)
        try:
            end = time.time() + 600
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.time() > end:
                    raise SystemExit(f"rl_gain: pipelines/serve.py did not come up on port {port}")
                time.sleep(2)
            run("pipelines/evaluate.py", "--endpoint", f"http://127.0.0.1:{port}", "--tasks", task,
                "--episodes", str(episodes), "--seed", str(EVAL_SEED), "--json", str(report))
        finally:
            server.terminate()
            server.wait(timeout=120)
    return json.loads(report.read_text())["closed_loop"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/rl_gain", help="every output of the run (resumable)")
    p.add_argument("--task", default="push-v3", help="the Meta-World task RL improves")
    p.add_argument("--checkpoint", default="", help="fine-tuned checkpoint to start from ('' = build one here)")
    p.add_argument("--expert_data", default="", help="the imitation set RL retrieves from ('' = the demos built here)")
    p.add_argument("--demos", type=int, default=20, help="expert demos of the task when building the checkpoint")
    p.add_argument("--pretrain_steps", type=int, default=600, help="pretraining steps when building the checkpoint")
    p.add_argument("--finetune_steps", type=int, default=400, help="fine-tuning steps when building the checkpoint")
    p.add_argument("--rl_episodes", type=int, default=10, help="RL episodes (App. A: at most 10)")
    p.add_argument("--rollouts", type=int, default=20, help="rollouts per RL episode (App. A: at most 20)")
    p.add_argument("--rl_flags", default="", help="extra pipelines/rl.py flags, one string (recorded in the output)")
    p.add_argument("--retriever_steps", type=int, default=2000, help="train_retriever.py steps on the imitation set "
                                                                     "(0 = RL's untrained CLIP)")
    p.add_argument("--control_steps", type=int, default=200, help="'w/o RL': fine-tuning steps on the extra demos")
    p.add_argument("--episodes", type=int, default=50, help="held-out evaluation episodes (paired)")
    p.add_argument("--name", default="", help="run name ('' = from task and flags)")
    p.add_argument("--port", type=int, default=8010, help="HTTP port of the RL run's Serve endpoint (the held-out "
                                                         "endpoint check uses port + 1)")
    p.add_argument("--quick", action="store_true", help="toy sizes: checks every step runs, measures nothing")
    args = p.parse_args(argv)
    small = []
    if args.quick:
        args.demos, args.pretrain_steps, args.finetune_steps, args.control_steps = 2, 2, 2, 2
        args.rl_episodes, args.rollouts, args.episodes, args.retriever_steps = 1, 2, 2, 2
        small = ["--global_batch_size", "8", "--checkpoint_every", "2", "--log_every", "1", "--scale.num_workers", "1"]
    work = (ROOT / args.work).resolve() if not Path(args.work).is_absolute() else Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rollouts = args.rl_episodes * args.rollouts
    if RL_SEED + rollouts > EVAL_SEED:
        raise SystemExit(f"rl_gain: RL layouts {RL_SEED}..{RL_SEED + rollouts} would reach the evaluation's "
                         f"({EVAL_SEED}..)")

    from syvla.intervals import SuccessRate
    from syvla.model.checkpoint import is_checkpoint_dir
    from syvla.sim.trusted import paired_gain

    # 1. the fine-tuned checkpoint
    expert_data = Path(args.expert_data).resolve() if args.expert_data else work / "raw"
    if args.checkpoint:
        base = Path(args.checkpoint).resolve()
        if not is_checkpoint_dir(base):
            raise SystemExit(f"rl_gain: --checkpoint {base} is not a policy checkpoint")
    else:
        base = build_finetuned(run, work, args.task, args.demos, args.pretrain_steps, args.finetune_steps, small,
                               raw=expert_data)

    # 2. the retriever, trained on the imitation set RL retrieves from
    rl_flags = shlex.split(args.rl_flags)
    if "--clip_checkpoint" not in rl_flags and args.retriever_steps > 0:
        clip = work / "retriever" / f"clip-{args.task}-{args.retriever_steps}.pt"
        if not clip.exists():
            run("pipelines/train_retriever.py", "--data", str(expert_data), "--tasks", args.task, "--output", str(clip),
                "--steps", str(args.retriever_steps), "--log_every", str(max(1, args.retriever_steps // 8)))
        rl_flags += ["--clip_checkpoint", str(clip)]

    # 3. RL with the default recipe (+ --rl_flags)
    name = args.name or f"{args.task}-" + (args.rl_flags.replace("--", "").replace(" ", "_") or "default")
    run_dir = work / "rl" / name
    final = run_dir / "final_version.json"
    if not final.exists():
        run("pipelines/rl.py", "--run.name", name, "--run.runs_dir", str(work / "rl"), "--run.checkpoint", str(base),
            "--run.tasks", args.task, "--run.expert_data", str(expert_data), "--run.seed", str(RL_SEED),
            "--rl_episodes", str(args.rl_episodes), "--rollouts_per_episode", str(args.rollouts),
            "--run.port", str(args.port), "--final_eval", "false", *rl_flags)
        state = json.loads((run_dir / "state.json").read_text())
        final.write_text(json.dumps({"version": state["version"], "checkpoint": state["checkpoints"][str(state["version"])],
                                     "rl_flags": shlex.join(rl_flags)}))
    after_rl = Path(json.loads(final.read_text())["checkpoint"])

    # 4. the "w/o RL" control: continued imitation on as many new expert demos as RL had rollouts
    control = work / "control" / f"w-o-rl-{args.task}-{rollouts}"
    if not is_checkpoint_dir(control):
        extra_raw, extra_prep = work / f"extra_raw_{rollouts}", work / f"extra_prepared_{rollouts}"
        if not (extra_raw / "meta" / "info.json").exists():
            run("pipelines/collect_sim.py", "--tasks", args.task, "--episodes_per_task", str(rollouts),
                "--seed", "7", "--output", str(extra_raw))
        if not (extra_prep / "manifest.json").exists():
            run("pipelines/prepare_data.py", "--inputs", f"metaworld={extra_raw}", "--output", str(extra_prep))
        run("pipelines/finetune.py", "--init_from", str(base), "--data.path", str(extra_prep),
            "--data.tasks", args.task, "--per_task", "false", "--name", control.name,
            "--storage_path", str(work / "runs"), "--out_dir", str(control.parent),
            "--max_steps", str(args.control_steps), *small)

    # 5. the same held-out layouts and noise for all three
    ev = work / "eval"
    results = {"fine-tuned (before)": evaluate(base, args.task, args.episodes, ev / f"base-{base.name}.json"),
               "after RL": evaluate(after_rl, args.task, args.episodes, ev / f"rl-{name}.json"),
               "w/o RL (more imitation)": evaluate(control, args.task, args.episodes, ev / f"{control.name}.json")}
    before = results["fine-tuned (before)"]
    log(f"{args.task}: {args.episodes} held-out layouts (seeds {EVAL_SEED}..), same flow noise for every policy; "
        f"RL: {args.rl_episodes} x {args.rollouts} rollouts, defaults + {shlex.join(rl_flags) or 'nothing'}")
    comparisons = {}
    for label, r in results.items():
        rate = SuccessRate.from_dict(r["success"])
        line = f"  {label:26s} {rate}"
        if r is not before:
            c = comparisons[label] = paired_gain(before, r)
            line += (f"; vs before {c['gain_points']:+.0f} points ({c['b_only']} layouts gained, {c['a_only']} lost, "
                     f"McNemar p = {c['mcnemar_p']:.3f})")
        log(line)
    vs = paired_gain(results["w/o RL (more imitation)"], results["after RL"])
    log(f"  after RL vs w/o RL: {vs['gain_points']:+.0f} points (p = {vs['mcnemar_p']:.3f})")
    served = evaluate_served(after_rl, args.task, args.episodes, ev / f"rl-{name}-endpoint.json", args.port + 1)
    agree = paired_gain(results["after RL"], served)
    log(f"  after RL through the endpoint: {SuccessRate.from_dict(served['success'])}; "
        f"{agree['n'] - agree['a_only'] - agree['b_only']}/{agree['n']} episodes with the same outcome as in process")
    summary = {"task": args.task, "episodes": args.episodes, "eval_seed": EVAL_SEED, "rl_flags": shlex.join(rl_flags),
               "rl_episodes": args.rl_episodes, "rollouts": args.rollouts, "control_steps": args.control_steps,
               "checkpoint": str(base), "success": {k: r["success"] for k, r in results.items()},
               "comparisons": comparisons, "rl_vs_control": vs, "endpoint": served["success"],
               "endpoint_vs_in_process": agree}
    (work / f"summary-{name}.json").write_text(json.dumps(summary, indent=1))
    print(f"rl_success_gain: {comparisons['after RL']['gain_points']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
