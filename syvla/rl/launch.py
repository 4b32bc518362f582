"""What `pipelines/rl.py` needs besides the controller: which policy to improve, the imitation set, and
simulated robots that drive the Serve endpoint while RL waits for their rewards.

    ckpt, version = resolve_policy(run)          # newest fine-tuned, else pretrained, else a new debug one
    experts = load_experts(run, chunk_len)       # the IL set of the RL tasks (collected when missing)
    robots = SimRobots(run, url)                 # RLController(on_collect=robots)

No ray.init here; the pipeline connects first.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import traceback
from pathlib import Path

from syvla.cli import field
from syvla.rl.guidance import ExpertSet
from syvla.sim import metaworld as mw


@dataclasses.dataclass(frozen=True)
class RLRunConfig:
    """Where the RL run gets its policy, data and robots (`pipelines/rl.py --run.<field>`)."""

    name: str = field("rl-debug", "run name: state, checkpoints and metrics go to runs/rl/<name>; same name = resume")
    runs_dir: str = field("runs/rl", "parent of run directories")
    checkpoint: str = field("", "policy checkpoint to improve; '' = newest under checkpoints/finetune, then "
                                 "checkpoints/pretrain, else a new untrained debug checkpoint")
    checkpoints_dir: str = field("checkpoints", "where fine-tuned / pretrained checkpoints are searched")
    tasks: tuple[str, ...] = field(("reach-v3",), "Meta-World tasks the robots run and the expert set keeps")
    expert_data: str = field("data/metaworld", "imitation dataset (LeRobot / RLDS); collected here when missing")
    expert_episodes: int = field(10, "demos per task collected when expert_data does not exist")
    robots: int = field(2, "simulated robot processes driving the endpoint (0 = real robots; rewards from their "
                           "code or from people at <endpoint>/operator)")
    operator: str = field("robot", "who labels simulated episodes: robot (each posts its success) or sim (a "
                                   "simulated operator labels them through the operator page's API)")
    operator_error_rate: float = field(0.0, "operator sim: probability that a label is flipped")
    seed: int = field(1000, "layout seed of the first robot episode; every collection uses new seeds, except "
                             "the final one, which reuses RL episode 0's (a paired before/after comparison)")
    max_steps: int = field(300, "env steps per robot episode (Meta-World: at most 500)")
    execute_steps: int = field(10, "actions executed per served chunk (match RLConfig.score_steps and "
                                    "expert_stride); 0 = the whole chunk")
    image_size: int = field(64, "camera pixels of the simulated robots")
    think: bool = field(False, "simulated robots ask for chain of thought before each chunk (Think-Before-Act); "
                               "the replay records it and RL scores the chunk with it")
    replicas: int = field(1, "Serve replicas of the policy")
    replica_cpus: float = field(0.5, "CPUs Ray reserves per Serve replica")
    host: str = field("127.0.0.1", "Serve HTTP host (0.0.0.0: robots and the operator page on other machines; "
                                   "set $SYVLA_API_KEY then)")
    port: int = field(8000, "Serve HTTP port")

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise ValueError("RLRunConfig.tasks must name at least one task")
        for name in ("expert_episodes", "max_steps", "image_size", "replicas", "port"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RLRunConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.robots < 0 or self.execute_steps < 0 or self.replica_cpus < 0:
            raise ValueError("RLRunConfig.robots, execute_steps and replica_cpus must be >= 0")
        if self.operator not in ("robot", "sim"):
            raise ValueError(f"RLRunConfig.operator must be robot or sim, got {self.operator!r}")
        if not 0.0 <= self.operator_error_rate <= 1.0:
            raise ValueError(f"RLRunConfig.operator_error_rate must be in [0, 1], got {self.operator_error_rate}")
        if self.operator_error_rate and self.operator != "sim":
            raise ValueError("RLRunConfig.operator_error_rate needs --run.operator sim (robots post exact outcomes)")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def replay_dir(self) -> Path:
        """The Serve replay buffer of this run: what the robots' episodes are written to and RL reads."""
        return self.run_dir / "replay"


def resolve_policy(run: RLRunConfig, log=print) -> tuple[Path, int]:
    """(checkpoint dir, policy version) RL starts from: the best stage available, and says which."""
    from syvla.model.checkpoint import read_policy_version
    from syvla.serving.launch import find_checkpoint

    root = Path(run.checkpoints_dir)
    path = find_checkpoint(run.checkpoint, [root / "finetune", root / "pretrain"], run.run_dir / "untrained-debug",
                           field="RLRunConfig.checkpoint", who="rl", embodiments=(mw.EMBODIMENT,), log=log)
    return path.resolve(), read_policy_version(path)


def load_experts(run: RLRunConfig, chunk_len: int, max_episodes_per_task: int = 0, log=print) -> ExpertSet:
    """The imitation set of the run's tasks: `expert_data` if it exists, else freshly collected demos."""
    path = Path(run.expert_data)
    if path.exists():
        log(f"[rl] expert set: {path} (tasks {list(run.tasks)})")
        return ExpertSet.load(path, chunk_len, run.tasks, max_episodes_per_task)
    from syvla.sim.expert import run_expert_episode
    from syvla.sim.robot import SimRobot

    log(f"[rl] WARNING: {path} not found: collecting {run.expert_episodes} scripted demos per task in-process")
    tables = []
    with SimRobot(image_size=run.image_size) as robot:
        for task in run.tasks:
            for k in range(run.expert_episodes):
                tables.append(run_expert_episode(task, seed=k, image_size=run.image_size, robot=robot,
                                                 episode_id=len(tables)))
    return ExpertSet.from_tables(tables, chunk_len, run.tasks, max_episodes_per_task)


def _api_key() -> str:
    """The key pipelines/rl.py's server requires ($SYVLA_API_KEY, as serve_config reads it)."""
    return os.environ.get("SYVLA_API_KEY", "")


class SimRobots:
    """on_collect hook: `robots` Meta-World robot processes run n episodes against the endpoint in the background.

    Each episode's success becomes its 0/1 reward (posted by the robot, or with `operator` sim by a
    simulated operator through the operator page's API, wrong with `operator_error_rate`), so it lands
    in the replay buffer as a rollout; the controller meanwhile waits on the rollout buffer.
    A robot failure is raised at the next collection or at `join`.
    """

    def __init__(self, run: RLRunConfig, url: str, log=print):
        self.run, self.url, self.log = run, url, log
        self._seed = run.seed
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self.summaries: list[dict] = []

    def __call__(self, label: str, version: int, n: int) -> None:
        from syvla.sim.episodes import Endpoint, EpisodeConfig, evaluate_endpoint

        self.join()
        per_task = -(-n // len(self.run.tasks))
        seed = self.run.seed if label == "final" else self._seed  # final: the layouts of RL episode 0
        cfg = EpisodeConfig(tasks=self.run.tasks, episodes=per_task, seed=seed, max_steps=self.run.max_steps,
                            execute_steps=self.run.execute_steps, image_size=self.run.image_size,
                            think=self.run.think)
        if label != "final":
            self._seed += per_task

        def drive():
            try:
                by_operator = self.run.operator == "sim"
                summary = evaluate_endpoint(Endpoint(self.url, api_key=_api_key(), post_rewards=not by_operator), cfg,
                                            robots=min(self.run.robots, per_task * len(self.run.tasks)))
                if by_operator:
                    self._operator_labels(summary["results"])
                self.summaries.append({"label": label, "version": version, **summary})
            except Exception:  # noqa: BLE001 - reported to the controller's thread by join()
                self._error = traceback.format_exc()

        self.log(f"[rl] robots: {per_task * len(self.run.tasks)} episodes on version {version} (seeds from {cfg.seed})")
        self._thread = threading.Thread(target=drive, name=f"sim-robots-{label}", daemon=True)
        self._thread.start()

    def _operator_labels(self, results: list[dict]) -> None:
        from syvla.sim.operator import SimulatedOperator

        op = SimulatedOperator(self.url, error_rate=self.run.operator_error_rate, seed=self._seed, api_key=_api_key())
        try:
            for ep in results:
                if not ep["aborted"]:
                    op.tell(ep["episode_id"], ep["success"])
            for _ in range(50):  # the page lists what the replay buffer holds; all of it is there by now
                op.label_ready()
                if not op.waiting:
                    break
                time.sleep(0.2)
        finally:
            op.close()
        flipped = sum(1 for lab in op.labels if lab.reward != int(lab.truth))
        self.log(f"[rl] simulated operator labelled {len(op.labels)} episodes ({flipped} wrong)")

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"simulated robots failed:\n{error}")
