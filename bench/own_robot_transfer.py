"""Does pretraining help a robot the model has never seen? Open-loop action error on held-out
episodes of a new robot after a short fine-tune from a pretrained checkpoint, against the same
fine-tune from a randomly initialised checkpoint of the same architecture (docs/own_robot.md).

    python bench/own_robot_transfer.py                     # the run of docs/own_robot.md (~40 min on 2 CPUs)
    python bench/own_robot_transfer.py --quick             # every step at toy size (~8 min): runs, measures nothing

The new robot is a Meta-World Sawyer seen through other eyes: an 18-d state (hand, gripper, both
objects; no previous frame, no goal), a 7-d action (xyz delta, gripper, and the absolute xyz target
the delta commands), cameras named front/top/wrist, an instruction of its own, on a task the
pretraining never saw. Its demonstrations are written as a LeRobot v2.1 dataset and go through
the user's own path: prepare_data.py -> finetune.py --init_from -> evaluate.py --heldout_data.
Every step runs the pipelines as a user would (subprocesses) and is skipped when its output
exists, so an interrupted run resumes. Last line: the pretrained / scratch open-loop MSE ratio
(< 1: pretraining helps).
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

ROBOT = "myrobot"
CAMERA_NAMES = {"corner2": "front", "topview": "top", "gripperPOV": "wrist"}
INSTRUCTIONS = {"drawer-open-v3": "pull the drawer all the way out", "door-open-v3": "swing the door open",
                "window-open-v3": "slide the window open"}
STATE_DIM = 18  # obs[:18]: hand xyz, gripper, object 1 pos + quat, object 2 pos + quat


log, run = pipeline_steps("own_robot")


def new_robot_episode(task: str, seed: int, episode: int, image_size: int, robot):
    """One scripted-expert Meta-World episode re-expressed as the new robot (FRAME_SCHEMA table)."""
    import numpy as np
    import pyarrow as pa

    from syvla import constants as K
    from syvla.data.columns import list_column
    from syvla.sim import metaworld as mw
    from syvla.sim.expert import run_expert_episode

    t = run_expert_episode(task, seed, image_size=image_size, episode_id=episode, robot=robot)
    obs = np.asarray(t.column(K.STATE).to_pylist(), np.float32)
    act = np.asarray(t.column(K.ACTION).to_pylist(), np.float32)
    target = obs[:, :3] + mw.EEF_SPEC.position_scale * act[:, :3]  # where the delta sends the hand
    action = np.concatenate([act, target], axis=1).astype(np.float32)
    views = [[CAMERA_NAMES[v] for v in row] for row in t.column(K.IMAGE_VIEWS).to_pylist()]
    cols = {K.STATE: list_column(obs[:, :STATE_DIM]), K.ACTION: list_column(action),
            K.DATASET: pa.array([ROBOT] * t.num_rows, pa.string()),
            K.TASK: pa.array([INSTRUCTIONS[task]] * t.num_rows, pa.string()),
            K.IMAGE_VIEWS: pa.array(views, pa.list_(pa.string()))}
    for name, col in cols.items():
        t = t.set_column(t.schema.get_field_index(name), t.schema.field(name).with_type(col.type), col)
    return t


def write_new_robot(root: Path, task: str, seeds, image_size: int) -> None:
    from syvla.data.lerobot import LeRobotWriteOptions, write_lerobot
    from syvla.sim.robot import SimRobot

    if (root / "meta" / "info.json").exists():
        log(f"{root} exists: reusing it")
        return
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)  # ours, from an interrupted run
    with SimRobot(image_size=image_size) as robot:
        episodes = []
        for k, seed in enumerate(seeds):
            episodes.append(new_robot_episode(task, int(seed), k, image_size, robot))
            log(f"{root.name}: episode {k + 1}/{len(seeds)} ({episodes[-1].num_rows} frames)")
    write_lerobot(episodes, tmp, LeRobotWriteOptions(version="v2.1", fps=80.0, robot_type="new-robot"))
    tmp.rename(root)


def prepare(raw: Path, out: Path, chunk_len: int) -> None:
    if (out / "manifest.json").exists():
        log(f"{out} exists: reusing it")
        return
    run("pipelines/prepare_data.py", "--inputs", f"{ROBOT}={raw}", "--output", str(out), "--chunk_len", str(chunk_len))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/own_robot_transfer", help="every output of the run (resumable)")
    p.add_argument("--task", default="drawer-open-v3", choices=sorted(INSTRUCTIONS),
                   help="the new robot's task (not among the pretraining demos)")
    p.add_argument("--pretrain_steps", type=int, default=1000, help="Meta-World pretraining steps (pretrain-debug)")
    p.add_argument("--pretrain_episodes", type=int, default=40, help="expert episodes per pretraining task")
    p.add_argument("--episodes", type=int, default=20, help="new-robot training episodes (seeds 0..)")
    p.add_argument("--heldout", type=int, default=10, help="new-robot held-out episodes (seeds 10000..)")
    p.add_argument("--finetune_steps", type=int, default=300, help="fine-tuning steps, the same for both inits")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="fine-tuning seeds (one run per init each)")
    p.add_argument("--image_size", type=int, default=64, help="camera pixels of the new robot's videos")
    p.add_argument("--quick", action="store_true", help="toy sizes: checks every step runs, measures nothing")
    args = p.parse_args(argv)
    if args.quick:
        args.pretrain_steps, args.pretrain_episodes, args.episodes, args.heldout = 2, 1, 2, 1
        args.finetune_steps, args.seeds, args.image_size = 2, [0], 32
    work = (ROOT / args.work).resolve() if not Path(args.work).is_absolute() else Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    small = ["--global_batch_size", "8", "--checkpoint_every", "2", "--log_every", "1",
             "--scale.num_workers", "1"] if args.quick else []

    from syvla.model.checkpoint import is_checkpoint_dir, read_config
    from syvla.model.policy import make_debug_checkpoint

    pretrained = work / "pretrained"
    if not is_checkpoint_dir(pretrained):
        run("pipelines/pretrain.py", "--name", "own-robot-pretrain", "--storage_path", str(work / "runs"),
            "--demos.collect", "true", "--demos.raw", str(work / "metaworld_raw"),
            "--demos.episodes_per_task", str(args.pretrain_episodes), "--demos.image_size", str(args.image_size),
            "--data.path", str(work / "metaworld_prepared"), "--max_steps", str(args.pretrain_steps),
            "--out", str(pretrained), *small)
    chunk_len = read_config(pretrained).expert.chunk_len
    scratch = work / "random_init"
    if not is_checkpoint_dir(scratch):  # the same architecture, untrained (unit statistics)
        make_debug_checkpoint(scratch, seed=0, cfg=read_config(pretrained))

    train_raw, held_raw = work / f"{ROBOT}_lerobot", work / f"{ROBOT}_heldout_lerobot"
    write_new_robot(train_raw, args.task, range(args.episodes), args.image_size)
    write_new_robot(held_raw, args.task, range(10_000, 10_000 + args.heldout), args.image_size)
    train_prep, held_prep = work / f"{ROBOT}_prepared", work / f"{ROBOT}_heldout_prepared"
    prepare(train_raw, train_prep, chunk_len)
    prepare(held_raw, held_prep, chunk_len)

    results = {}
    for init, ckpt in (("pretrained", pretrained), ("scratch", scratch)):
        for seed in args.seeds:
            name = f"own-robot-{init}-s{seed}"
            out = work / "finetuned" / name
            if not is_checkpoint_dir(out):
                run("pipelines/finetune.py", "--init_from", str(ckpt), "--data.path", str(train_prep),
                    "--name", name, "--storage_path", str(work / "runs"), "--out_dir", str(work / "finetuned"),
                    "--max_steps", str(args.finetune_steps), "--seed", str(seed), *small)
            report = work / "eval" / f"{name}.json"
            if not report.exists():
                run("pipelines/evaluate.py", "--checkpoint", str(out), "--episodes", "0",
                    "--heldout_data", str(held_prep), "--json", str(report))
            results[(init, seed)] = json.loads(report.read_text())["open_loop"][ROBOT]

    log(f"open-loop MSE on {args.heldout} held-out {ROBOT} episodes ({args.task}), normalized units, "
        f"after {args.finetune_steps} fine-tuning steps:")
    mean = {}
    for init in ("pretrained", "scratch"):
        rows = [results[(init, s)] for s in args.seeds]
        mean[init] = sum(r["policy_mse"] for r in rows) / len(rows)
        log(f"  {init:10s} " + "  ".join(f"seed {s}: {r['policy_mse']:.4f}" for s, r in zip(args.seeds, rows))
            + f"  mean {mean[init]:.4f} (mean-action baseline {rows[0]['baseline_mse']:.4f}, "
              f"{rows[0]['frames']} frames)")
    summary = {"task": args.task, "finetune_steps": args.finetune_steps, "pretrain_steps": args.pretrain_steps,
               "episodes": args.episodes, "heldout": args.heldout, "seeds": args.seeds,
               "results": {f"{i}-s{s}": r for (i, s), r in results.items()}}
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"own_robot_pretrained_vs_scratch_mse_ratio: {mean['pretrained'] / max(mean['scratch'], 1e-12):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
