"""Which Meta-World tasks leave RL something to gain? Closed-loop success of the fine-tuned debug policy
per task, on held-out layouts, with 95% Wilson intervals (the task table of docs/rl.md).

    python bench/rl_tasks.py                       # 6 tasks, ~45 min on 2 CPUs
    python bench/rl_tasks.py --quick               # every step at toy size (~6 min): runs, measures nothing

One pretraining run on the scripted demos of every candidate task, then one fine-tuning run per task
from it (the README's demo does the same for its task), then `pipelines/evaluate.py` on
`--episodes` held-out layouts per task (layout seeds from syvla.sim.trusted EVAL_SEED, disjoint from
the demos' and from the RL robots' layouts). Every step runs the pipelines as a user would
(subprocesses) and is skipped when its output exists, so an interrupted run resumes. Last line:
the number of tasks whose success lies in the 30-70% band RL is meant for.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import syvla  # noqa: E402,F401  (installs the torchvision shim first)
from steps import pipeline_steps  # noqa: E402
from syvla.sim.trusted import EVAL_SEED  # noqa: E402

TASKS = ("push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "button-press-wall-v3", "peg-insert-side-v3")
BAND = (0.30, 0.70)  # success the issue asks RL to start from: not at the floor, not at the ceiling


log, run = pipeline_steps("rl_tasks")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/rl_tasks", help="every output of the run (resumable)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), help="candidate Meta-World tasks")
    p.add_argument("--demos", type=int, default=20, help="expert demos per task (pretraining and fine-tuning)")
    p.add_argument("--pretrain_steps", type=int, default=1000, help="pretraining steps on every task's demos")
    p.add_argument("--finetune_steps", type=int, default=400, help="fine-tuning steps per task")
    p.add_argument("--episodes", type=int, default=50, help="held-out evaluation episodes per task")
    p.add_argument("--quick", action="store_true", help="toy sizes: checks every step runs, measures nothing")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.demos, args.pretrain_steps, args.finetune_steps, args.episodes = args.tasks[:2], 1, 2, 2, 2
    work = (ROOT / args.work).resolve() if not Path(args.work).is_absolute() else Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    small = ["--global_batch_size", "8", "--checkpoint_every", "2", "--log_every", "1",
             "--scale.num_workers", "1"] if args.quick else []

    from syvla.intervals import SuccessRate
    from syvla.model.checkpoint import is_checkpoint_dir

    pretrained, prepared = work / "pretrained", work / "prepared"
    if not is_checkpoint_dir(pretrained):
        run("pipelines/pretrain.py", "--name", "rl-tasks-pretrain", "--storage_path", str(work / "runs"),
            "--demos.collect", "true", "--demos.raw", str(work / "raw"), "--demos.tasks", ",".join(args.tasks),
            "--demos.episodes_per_task", str(args.demos), "--data.path", str(prepared),
            "--max_steps", str(args.pretrain_steps), "--out", str(pretrained), *small)
    rows = {}
    for task in args.tasks:
        name = f"rl-tasks-{task}"
        ckpt = work / "finetuned" / name
        if not is_checkpoint_dir(ckpt):
            run("pipelines/finetune.py", "--init_from", str(pretrained), "--data.path", str(prepared),
                "--data.tasks", task, "--per_task", "false", "--name", name, "--storage_path", str(work / "runs"),
                "--out_dir", str(work / "finetuned"), "--max_steps", str(args.finetune_steps), *small)
        report = work / "eval" / f"{task}.json"
        if not report.exists():
            report.parent.mkdir(parents=True, exist_ok=True)
            run("pipelines/evaluate.py", "--checkpoint", str(ckpt), "--tasks", task, "--episodes", str(args.episodes),
                "--seed", str(EVAL_SEED), "--heldout_episodes", "0", "--json", str(report))
        closed = json.loads(report.read_text())["closed_loop"]
        rows[task] = SuccessRate.from_dict(closed["per_task_success"][task])

    log(f"fine-tuned debug policy, {args.demos} demos per task, pretrain {args.pretrain_steps} + fine-tune "
        f"{args.finetune_steps} steps; {args.episodes} held-out layouts per task (seeds {EVAL_SEED}..):")
    for task, rate in rows.items():
        mark = "  <- in the band" if BAND[0] <= rate.rate <= BAND[1] else ""
        log(f"  {task:22s} {rate}{mark}")
    (work / "summary.json").write_text(json.dumps({"tasks": {t: r.to_dict() for t, r in rows.items()},
                                                   "demos": args.demos, "pretrain_steps": args.pretrain_steps,
                                                   "finetune_steps": args.finetune_steps,
                                                   "episodes": args.episodes, "seed": EVAL_SEED}, indent=1))
    print(f"rl_tasks_in_band: {sum(BAND[0] <= r.rate <= BAND[1] for r in rows.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
