"""Meta-World expert collection as plain functions: the plan, a worker, an ordered writer.

`syvla.sim.ray_collect` runs `EpisodeCollector`s as Ray actors; everything here
also runs in one process (`collect_local`), with the same output.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa

from syvla import constants as K
from syvla.cli import field
from syvla.data.lerobot import LeRobotWriteOptions, LeRobotWriter
from syvla.sim import metaworld as mw
from syvla.sim.expert import run_expert_episode
from syvla.sim.robot import SimRobot


@dataclasses.dataclass(frozen=True)
class CollectSimConfig:
    """Meta-World expert demonstrations -> a LeRobot v3.0 dataset."""

    tasks: str = field("reach-v3,button-press-topdown-v3,drawer-close-v3",
                       "comma-separated Meta-World v3 tasks (the default three have fast, reliable experts)")
    episodes_per_task: int = field(10, "expert episodes collected per task")
    image_size: int = field(64, "pixels, square, every camera (even and >= 8 for yuv420p video)")
    views: str = field(",".join(mw.CAMERAS), "comma-separated cameras (= metaworld.EMBODIMENT.cameras)")
    seed: int = field(0, "draws every episode's layout seed and which episodes get CoT text")
    cot_fraction: float = field(0.1, "fraction of episodes with templated chain-of-thought text per frame, in [0, 1]")
    max_steps: int = field(200, "env steps per episode; the experts succeed in 35-140 steps")
    tail_steps: int = field(mw.SUCCESS_TAIL_STEPS, "expert steps recorded after the first success")
    rest_steps: int = field(mw.REST_STEPS, "then frames of the hold-still action (no motion, gripper kept) that "
                                           "end each demo at rest; 0 = none")
    output: str = field("data/metaworld", "dataset folder (git-ignored)")
    codec: str = field("h264", "video codec: h264 (fast on CPU) or av1")
    workers: int = field(0, "parallel collectors; 0 = one per CPU Ray reports")
    num_cpus: int = field(2, "CPUs of the local Ray instance started when none is running")
    address: str = field("", "Ray address; '' = $RAY_ADDRESS (set by `ray job submit`) or a new local instance")
    overwrite: bool = field(False, "replace an existing dataset even if it was made with the same arguments")

    def __post_init__(self):
        tasks = self.task_list
        if not tasks:
            raise ValueError("CollectSimConfig.tasks must name at least one task")
        unknown = [t for t in tasks if t not in mw.TASK_INSTRUCTIONS]
        if unknown:
            raise ValueError(f"CollectSimConfig.tasks has unknown Meta-World tasks {unknown}")
        if self.episodes_per_task < 1:
            raise ValueError(f"CollectSimConfig.episodes_per_task must be >= 1, got {self.episodes_per_task}")
        if self.image_size < 8 or self.image_size % 2:
            raise ValueError(f"CollectSimConfig.image_size must be even and >= 8 (yuv420p video), got {self.image_size}")
        if not self.view_list:
            raise ValueError("CollectSimConfig.views must name at least one camera")
        if not 0.0 <= self.cot_fraction <= 1.0:
            raise ValueError(f"CollectSimConfig.cot_fraction must be in [0, 1], got {self.cot_fraction}")
        if not 1 <= self.max_steps <= mw.MAX_PATH_LENGTH:
            raise ValueError(f"CollectSimConfig.max_steps must be in 1..{mw.MAX_PATH_LENGTH}, got {self.max_steps}")
        if not self.output:
            raise ValueError("CollectSimConfig.output must be a folder path")
        if self.codec not in ("h264", "av1"):
            raise ValueError(f"CollectSimConfig.codec must be 'h264' or 'av1', got {self.codec!r}")
        if self.tail_steps < 0 or self.rest_steps < 0:
            raise ValueError(f"CollectSimConfig.tail_steps and rest_steps must be >= 0, got {self.tail_steps} and "
                             f"{self.rest_steps}")
        if self.workers < 0 or self.num_cpus < 1:
            raise ValueError("CollectSimConfig.workers must be >= 0 and num_cpus >= 1")

    @property
    def task_list(self) -> list[str]:
        return [t.strip() for t in self.tasks.split(",") if t.strip()]

    @property
    def view_list(self) -> list[str]:
        return [v.strip() for v in self.views.split(",") if v.strip()]

    def fingerprint(self) -> dict:
        """The fields that decide the dataset's content (not where or how fast it is made)."""
        skip = {"output", "workers", "num_cpus", "address", "overwrite"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    episode_id: int
    task: str
    seed: int  # layout seed
    cot: bool


def episode_plan(cfg: CollectSimConfig) -> list[EpisodeSpec]:
    """Every episode to collect, grouped by task (so a worker rarely switches envs)."""
    tasks = cfg.task_list
    n = len(tasks) * cfg.episodes_per_task
    rng = np.random.default_rng(cfg.seed)
    seeds = rng.choice(2**31 - 1, size=n, replace=False)  # distinct layouts across the run
    cot = np.zeros(n, bool)
    cot[rng.choice(n, size=int(round(cfg.cot_fraction * n)), replace=False)] = True
    return [EpisodeSpec(i, tasks[i // cfg.episodes_per_task], int(seeds[i]), bool(cot[i])) for i in range(n)]


class EpisodeCollector:
    """Runs expert episodes, reusing one SimRobot (env + renderer per task)."""

    def __init__(self, image_size: int, views, max_steps: int, tail_steps: int = mw.SUCCESS_TAIL_STEPS,
                 rest_steps: int = mw.REST_STEPS):
        self.robot = SimRobot(image_size=image_size, views=views)
        self.image_size, self.views, self.max_steps = image_size, tuple(views), max_steps
        self.tail_steps, self.rest_steps = tail_steps, rest_steps

    @classmethod
    def for_config(cls, cfg: CollectSimConfig) -> "EpisodeCollector":
        return cls(cfg.image_size, cfg.view_list, cfg.max_steps, cfg.tail_steps, cfg.rest_steps)

    def run(self, spec: EpisodeSpec) -> pa.Table:
        return run_expert_episode(spec.task, spec.seed, image_size=self.image_size, views=self.views,
                                  max_steps=self.max_steps, cot=spec.cot, episode_id=spec.episode_id,
                                  robot=self.robot, tail_steps=self.tail_steps, rest_steps=self.rest_steps)

    def close(self) -> None:
        self.robot.close()


class OrderedSink:
    """Writes episodes in episode_id order whatever order they finish in (deterministic output)."""

    def __init__(self, writer: LeRobotWriter, first_id: int = 0):
        self.writer = writer
        self.next_id = first_id
        self.pending: dict[int, pa.Table] = {}

    def add(self, table: pa.Table) -> None:
        self.pending[int(table.column(K.EPISODE_ID)[0].as_py())] = table
        while self.next_id in self.pending:
            self.writer.add_episode(self.pending.pop(self.next_id))
            self.next_id += 1


class Progress:
    """Counts episodes and successes per task; one line per finished episode."""

    def __init__(self, total: int, log=print):
        self.total, self.log = total, log
        self.done = 0
        self.success: dict[str, list[int]] = {}

    def update(self, spec: EpisodeSpec, table: pa.Table) -> None:
        self.done += 1
        ok = bool(table.column(K.SUCCESS)[0].as_py())
        s = self.success.setdefault(spec.task, [0, 0])
        s[0] += ok
        s[1] += 1
        all_ok = sum(v[0] for v in self.success.values())
        self.log(f"[collect_sim] {self.done}/{self.total} {spec.task} seed={spec.seed}: {table.num_rows} frames, "
                 f"{'success' if ok else 'FAILED'}; successes {all_ok}/{self.done}")

    def summary(self) -> str:
        per_task = ", ".join(f"{t} {a}/{b}" for t, (a, b) in self.success.items())
        return f"successes by task: {per_task}"


def made_by_collect(root: str | Path) -> bool:
    """True when `root` holds a dataset this collector wrote (its info.json records the collect config)."""
    info = Path(root) / "meta" / "info.json"
    try:
        return "collect_config" in json.loads(info.read_text()).get("syvla", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def check_output(output: str | Path) -> None:
    """Raise FileExistsError unless `output` is absent, empty, or a dataset this collector wrote:
    collection replaces only its own datasets, never a folder someone else made."""
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not made_by_collect(out):
        raise FileExistsError(f"{out} holds data the simulator collector did not write; it is left as it is. "
                              f"Choose another output folder")


def existing_matches(cfg: CollectSimConfig) -> bool:
    """True when cfg.output already holds a complete dataset made with the same content arguments."""
    info = Path(cfg.output) / "meta" / "info.json"
    if not info.is_file():
        return False
    try:
        made_with = json.loads(info.read_text()).get("syvla", {}).get("collect_config")
    except json.JSONDecodeError:
        return False
    return made_with == json.loads(json.dumps(cfg.fingerprint()))


def open_writer(cfg: CollectSimConfig) -> LeRobotWriter:
    opts = LeRobotWriteOptions(fps=mw.CONTROL_HZ, codec=cfg.codec, robot_type=mw.ROBOT_TYPE)
    return LeRobotWriter(cfg.output, opts, dataset=mw.DATASET_NAME, overwrite=True,
                         extra_info={"collect_config": cfg.fingerprint()})


def write_episodes(cfg: CollectSimConfig, finished: Iterable[tuple[EpisodeSpec, pa.Table]], total: int,
                   log=print) -> tuple[LeRobotWriter, Progress]:
    """Write (spec, table) pairs, in whatever order they finish, as the dataset cfg.output (in
    episode_id order); logs a line per episode. Returns the closed writer and the progress counts."""
    progress = Progress(total, log)
    with open_writer(cfg) as writer:
        sink = OrderedSink(writer)
        for spec, table in finished:
            progress.update(spec, table)
            sink.add(table)
    return writer, progress


def collect_local(cfg: CollectSimConfig, log=print) -> Path:
    """Single-process collection (no Ray): the same dataset as syvla.sim.ray_collect.collect."""
    specs = episode_plan(cfg)
    worker = EpisodeCollector.for_config(cfg)
    try:
        _, progress = write_episodes(cfg, ((spec, worker.run(spec)) for spec in specs), len(specs), log)
    finally:
        worker.close()
    log(f"[collect_sim] {progress.summary()}")
    return Path(cfg.output)
