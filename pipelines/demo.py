"""The whole product on one machine: demos -> prepare -> pretrain -> fine-tune -> serve -> robots -> RL.

    python pipelines/demo.py                       # debug preset, local Ray, Meta-World (the README's main job)
    python pipelines/demo.py --task reach-v3 --pretrain_steps 600 --rl_rollouts 10

Each stage is the pipeline a user would run by hand, called in-process on one
Ray cluster. The last stage measures the fine-tuned and the RL policy on the same
held-out layouts with the same flow noise (syvla.sim.trusted), with 95% Wilson
intervals: the RL robots' own success is on training layouts and is not the result.
Outputs: data/, checkpoints/, runs/; a summary PNG and JSON in runs/demo/.
Re-running reuses the collected data and resumes finished runs.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import syvla  # noqa: E402,F401  (installs the torchvision shim first)
from common import RayConfig, connect_ray  # noqa: E402
from syvla.cli import field, parse_configs  # noqa: E402
from syvla.intervals import SuccessRate  # noqa: E402

SUMMARY_FILE, SUMMARY_PLOT = "summary.json", "summary.png"  # in runs/<name>/
EVAL_FILE = "heldout_eval.json"  # the held-out evaluation stage's result, beside them


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    task: str = field("push-v3", "Meta-World task fine-tuned, served and improved with RL (push-v3: the fine-tuned "
                                 "debug policy is below the ceiling there, docs/rl.md)")
    pretrain_tasks: str = field("reach-v3,push-v3,button-press-topdown-v3", "comma-separated tasks of the "
                                "pretraining demos")
    episodes_per_task: int = field(20, "expert demos per task")
    pretrain_steps: int = field(600, "optimizer steps of pretraining (debug preset)")
    finetune_steps: int = field(400, "optimizer steps of fine-tuning on `task`")
    retriever_steps: int = field(2000, "train_retriever.py steps: RL's CLIP encoder fine-tuned on the demos it "
                                       "retrieves from (docs/rl.md)")
    rl_episodes: int = field(2, "RL episodes (collect -> update -> publish)")
    rl_rollouts: int = field(10, "rollouts per RL episode")
    eval_episodes: int = field(50, "held-out evaluation episodes of the fine-tuned and the RL policy (paired)")
    name: str = field("demo", "run name prefix (resumes when re-run)")

    def __post_init__(self):
        for f in ("episodes_per_task", "pretrain_steps", "finetune_steps", "retriever_steps", "rl_episodes",
                  "rl_rollouts", "eval_episodes"):
            if getattr(self, f) < 1:
                raise ValueError(f"DemoConfig.{f} must be >= 1, got {getattr(self, f)}")
        if self.task not in self.pretrain_tasks.split(","):
            raise ValueError(f"DemoConfig.task {self.task!r} must be one of pretrain_tasks {self.pretrain_tasks!r}")


def main(argv=None) -> int:
    cfg, ray_cfg = parse_configs(argv, __doc__, DemoConfig(), RayConfig())
    import collect_sim
    import finetune
    import pretrain
    import rl
    import train_retriever

    from syvla.rl.controller import RunState
    from syvla.rl.launch import RLRunConfig
    from syvla.rl.retriever_training import written_by_this_tool
    from syvla.runstate import read_json, write_json

    from syvla.train.config import preset
    from syvla.train.pipeline import DemoConfig as Demos
    from syvla.train.pipeline import check_demo_folders

    try:  # the stages write data/metaworld and data/prepared/metaworld: never over a user's folders
        check_demo_folders(Demos(), preset("pretrain-debug").data.path)
    except FileExistsError as e:
        raise SystemExit(f"demo.py: {e}")
    connect_ray(ray_cfg.address, ray_cfg.num_cpus)  # every stage below joins this instance
    out = Path("runs") / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    pre_name, ft_name = f"{cfg.name}-pretrain", f"{cfg.name}-finetune"
    pre_ckpt = Path("checkpoints/pretrain") / pre_name
    clip = Path("checkpoints/retriever") / f"{cfg.name}-{cfg.task}.pt"
    demos = ["--demos.tasks", cfg.pretrain_tasks, "--demos.episodes_per_task", str(cfg.episodes_per_task)]
    stages = [
        ("collect demos", lambda: collect_sim.main(["--tasks", cfg.pretrain_tasks, "--episodes_per_task",
                                                    str(cfg.episodes_per_task)])),
        ("pretrain", lambda: pretrain.main(["--name", pre_name, "--max_steps", str(cfg.pretrain_steps), *demos])),
        ("fine-tune", lambda: finetune.main(["--name", ft_name, "--init_from", str(pre_ckpt), "--per_task", "false",
                                             "--data.tasks", cfg.task, "--max_steps", str(cfg.finetune_steps), *demos])),
        ("retriever", lambda: 0 if written_by_this_tool(clip) else train_retriever.main(  # a re-run keeps it
            ["--data", "data/metaworld", "--tasks", cfg.task, "--output", str(clip), "--steps",
             str(cfg.retriever_steps), "--log_every", str(max(1, cfg.retriever_steps // 4))])),
        ("serve + robots + RL", lambda: rl.main(["--run.name", cfg.name, "--run.tasks", cfg.task,
                                                 "--run.checkpoint", f"checkpoints/finetune/{ft_name}",
                                                 "--clip_checkpoint", str(clip),
                                                 "--rl_episodes", str(cfg.rl_episodes),
                                                 "--rollouts_per_episode", str(cfg.rl_rollouts),
                                                 "--final_eval", "false"])),
        ("held-out evaluation", lambda: heldout_evaluation(cfg, out)),
    ]
    timings = {}
    for i, (label, run) in enumerate(stages, 1):
        print(f"\n===== [{i}/{len(stages)}] {label} =====", flush=True)
        start = time.perf_counter()
        rc = run()
        timings[label] = time.perf_counter() - start
        print(f"===== {label}: {timings[label]:.0f} s =====", flush=True)
        if rc:
            print(f"[demo] stage {label!r} failed with exit code {rc}", file=sys.stderr)
            return rc

    evaluation = read_json(out / EVAL_FILE)
    before, after = evaluation["before"], evaluation["after"]
    summary = {"task": cfg.task, "stage_seconds": timings, "total_seconds": sum(timings.values()),
               "success_before": before, "success_after": after, "paired": evaluation["paired"],
               "rl_metrics": RunState.load(RLRunConfig(name=cfg.name).run_dir).metrics}
    write_json(out / SUMMARY_FILE, summary)
    _plot(summary, out / SUMMARY_PLOT)
    print("\n===== summary =====")
    for label, sec in timings.items():
        print(f"  {label:<22} {sec:7.0f} s")
    print(f"  {'total':<22} {summary['total_seconds']:7.0f} s")
    paired = evaluation["paired"]
    print(f"  {cfg.task}, {paired['n']} held-out layouts: v{before['version']} (fine-tuned) "
          f"{SuccessRate.from_dict(before['success'])} -> v{after['version']} (after {cfg.rl_episodes} RL "
          f"episode(s)) {SuccessRate.from_dict(after['success'])}; {paired['gain_points']:+.0f} points, "
          f"{paired['b_only']} layouts gained, {paired['a_only']} lost (McNemar p = {paired['mcnemar_p']:.2f})")
    print(f"  summary: {out / SUMMARY_PLOT}, {out / SUMMARY_FILE}")
    return 0


def heldout_evaluation(cfg: DemoConfig, out: Path) -> int:
    """The fine-tuned policy and the RL run's newest version on the same held-out layouts and noise."""
    from syvla.model.policy import Policy
    from syvla.rl.controller import RunState
    from syvla.rl.launch import RLRunConfig
    from syvla.runstate import write_json
    from syvla.sim.episodes import evaluate_policy
    from syvla.sim.trusted import paired_gain, trusted_episodes

    state = RunState.load(RLRunConfig(name=cfg.name).run_dir)
    episodes = trusted_episodes(cfg.task, cfg.eval_episodes)
    runs = {}
    for label, version in (("before", state.base_version), ("after", state.version)):
        ckpt = state.checkpoints[str(version)]
        print(f"[demo] held-out evaluation of v{version} ({ckpt}): {cfg.eval_episodes} layouts from seed "
              f"{episodes.seed}", flush=True)
        result = evaluate_policy(Policy.load(ckpt), episodes)
        runs[label] = result
        print(f"[demo] v{version}: {SuccessRate.from_dict(result['success'])}", flush=True)
    write_json(out / EVAL_FILE, {label: {"version": v, "checkpoint": state.checkpoints[str(v)],
                                         "success": runs[label]["success"], "results": runs[label]["results"]}
                                 for label, v in (("before", state.base_version), ("after", state.version))}
               | {"paired": paired_gain(runs["before"], runs["after"])})
    return 0


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    labels = list(summary["stage_seconds"])
    ax1.barh(labels, [summary["stage_seconds"][k] / 60 for k in labels], color="tab:blue")
    ax1.invert_yaxis()
    ax1.set_xlabel("minutes")
    ax1.set_title(f"stage time (total {summary['total_seconds'] / 60:.1f} min)")
    b, a = summary["success_before"], summary["success_after"]
    rates = [SuccessRate.from_dict(b["success"]), SuccessRate.from_dict(a["success"])]
    values = [r.rate for r in rates]
    errors = [[r.rate - r.low for r in rates], [r.high - r.rate for r in rates]]
    worse, better = rates[1].high < rates[0].low, rates[1].low > rates[0].high
    ax2.bar([f"v{b['version']}\nfine-tuned", f"v{a['version']}\nafter RL"], values, yerr=errors, capsize=6,
            color=["tab:gray", "tab:red" if worse else "tab:green" if better else "tab:olive"])
    for x, r in enumerate(rates):
        ax2.text(x, min(r.high + 0.03, 0.97), f"{r.successes}/{r.n}", ha="center")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("success rate (95% Wilson interval)")
    ax2.set_title(f"{summary['task']}: {rates[0].n} held-out layouts, paired")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
