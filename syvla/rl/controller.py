"""The RL controller (§3.3, App. A "RL Infra"): one loop that reads like the algorithm.

    for each RL episode (at most 10 per task, App. A):
        collect     up to N (<= 20) served episodes with their 0/1 rewards, from the current version
        retrieve    k similar expert frames per rollout step (§3.3; random / none in the ablations)
        advantages  clipped GAE on rollout steps (value model); 1.0 on expert frames
        update      K FPO-style PPO steps on the merged batch; the value model on the lambda-returns
        publish     checkpoint version v + 1; every Serve replica switches to it

A single controller drives the workers (veRL style): `RLWorkers` holds the
rollout buffer, the retriever, the value learner and the learner group, as Ray
actors (`syvla.rl.actors.start_workers`) or as plain in-process objects
(`local_workers`): the controller calls the same methods on either.

State (`state.json` in the run directory, rewritten atomically after every
step that matters): RL episode index, current version and its checkpoint, the
version each rollout came from, the episodes consumed, the metrics. A new
controller on the same run directory resumes from it: it reloads the learners'
and the value model's weights, re-publishes the current version (a no-op when
Serve already has it) and redoes the interrupted RL episode with fresh rollouts.
The learners' AdamW state persists across RL episodes and is saved after every
update (`optimizer.pt`), so a resumed run goes on with the same moments.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from syvla.model.config import SyVLAConfig
from syvla.rl.batch import merge_batch, rollout_advantages
from syvla.rl.config import RLConfig
from syvla.rl.metrics import episode_metrics, write_report
from syvla.rl.rollouts import rollout_steps
from syvla.cli import to_flat_dict
from syvla.runstate import read_json, to_json, write_json

STATE_FILE = "state.json"  # RunState, in the run directory
VALUE_FILE = "value.safetensors"  # the value model's weights, beside it
OPTIMIZER_FILE = "optimizer.pt"  # the learners' AdamW state at the newest version, beside it
_STATE_FORMAT = 1

Publish = Callable[[str, int], None]  # (checkpoint dir, version): make every replica serve it


@dataclasses.dataclass
class RLWorkers:
    """What the controller drives; Ray actor proxies or local objects with the same methods."""

    buffer: Any  # RolloutCollector: collect(...), forget(ids)
    retriever: Any | None  # SampleRetriever: retrieve(samples), samples(rows); None without expert data
    value: Any  # ValueTrainer: warmup(), values(samples), fit(samples, targets), expert_gae(rows), save/load
    learners: Any  # LearnerGroup: update(batch), save(path, version), load(ckpt_dir)


@dataclasses.dataclass
class RunState:
    base_version: int  # the version RL started from (the fine-tuned checkpoint)
    version: int  # the newest version: checkpoint written, published (or being published)
    checkpoints: dict[str, str]  # version -> checkpoint dir
    episode: int = 0  # RL episodes completed
    consumed: list[str] = dataclasses.field(default_factory=list)  # replay episodes used (never reused)
    rollout_versions: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # RL episode -> {id: v}
    metrics: list[dict] = dataclasses.field(default_factory=list)  # one dict per RL episode
    warmup: dict = dataclasses.field(default_factory=dict)  # value warm-up statistics
    final: dict = dataclasses.field(default_factory=dict)  # the last version's measured success
    config: dict = dataclasses.field(default_factory=dict)
    format: int = _STATE_FORMAT

    @staticmethod
    def exists(run_dir: str | Path) -> bool:
        return (Path(run_dir) / STATE_FILE).is_file()

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunState":
        """The state of the RL run in `run_dir` (its state.json)."""
        path = Path(run_dir) / STATE_FILE
        raw = read_json(path)
        if raw.get("format") != _STATE_FORMAT:
            raise ValueError(f"{path}: RL state format {raw.get('format')} is not {_STATE_FORMAT}")
        return cls(**raw)

    def save(self, run_dir: str | Path) -> Path:
        """Rewrite `run_dir`/state.json atomically."""
        return write_json(Path(run_dir) / STATE_FILE, dataclasses.asdict(self))


class RLController:
    def __init__(self, cfg: RLConfig, workers: RLWorkers, run_dir: str | Path, base_checkpoint: str | Path,
                 base_version: int, policy_cfg: SyVLAConfig, publish: Publish,
                 on_collect: Callable[[str, int, int], None] | None = None, log=print,
                 on_episode: Callable[[dict], None] | None = None):
        """on_collect(label, version, n) runs before each collection (e.g. start n simulated robot episodes);
        on_episode(metrics) after each RL episode (e.g. export them, syvla.rl.actors.rl_metrics_exporter)."""
        if cfg.use_expert_data and workers.retriever is None:
            raise ValueError("use_expert_data=True needs a retriever")
        self.cfg, self.workers, self.policy_cfg = cfg, workers, policy_cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.base_checkpoint, self.base_version = str(Path(base_checkpoint).resolve()), int(base_version)
        self.publish, self.on_collect, self.log, self.on_episode = publish, on_collect, log, on_episode
        self.expert_train_on_padding = cfg.expert_train_on_padding(base_checkpoint)
        if cfg.use_expert_data:
            fits = "every chunk step, the hold-still padding too" if self.expert_train_on_padding else "their own steps"
            self.log(f"[rl] expert frames' losses fit {fits} (train_on_padding={cfg.train_on_padding})")

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self) -> RunState:
        state = self.start_or_resume()
        for episode in range(state.episode, self.cfg.rl_episodes):
            self.rl_episode(state, episode)
        if self.cfg.final_eval and not state.final:
            got = self.collect(state, "final")
            state.final = {"version": state.version, **got.report()}
            state.consumed += [t.episode_id for t in got.trajectories]
            self.save(state)
        write_report(self.run_dir, state)
        return state

    def rl_episode(self, state: RunState, episode: int) -> None:
        cfg, timings = self.cfg, {}
        clock = time.perf_counter()

        def lap(name):
            nonlocal clock
            now = time.perf_counter()
            timings[f"time_{name}_s"] = round(now - clock, 2)
            clock = now

        # 1. collect: up to N rollouts with their 0/1 rewards from the current version (App. A)
        got = self.collect(state, str(episode))
        steps = rollout_steps(got.trajectories, cfg.score_steps)
        lap("collect")
        # 2. retrieve: k similar expert frames per rollout step (§3.3), random or none in the ablations
        experts, expert_gae, similarity = [], None, float("nan")
        if cfg.use_expert_data:
            found = self.workers.retriever.retrieve(steps.samples)
            rows = found.rows.reshape(-1)
            experts, similarity = self.workers.retriever.samples(rows), found.mean_similarity
            if cfg.advantage.expert_gae:  # ablation "w/ standard Advantage"
                expert_gae = self.workers.value.expert_gae(rows)
        lap("retrieve")
        # 3. advantages: GAE clipped to [-0.8, 0.8] on rollout steps, 1.0 on expert frames (App. A)
        values = self.workers.value.values(steps.samples)
        adv, returns = rollout_advantages(steps, values, cfg.advantage)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + episode)
        batch = merge_batch(steps, adv, experts, expert_gae, state.version, cfg, self.policy_cfg, gen,
                            self.expert_train_on_padding)
        lap("advantages")
        # 4. update: K PPO steps on the merged batch (learners all-reduce gradients); value on lambda-returns
        policy_stats = self.workers.learners.update(batch)
        value_stats = self.workers.value.fit(steps.samples, returns)
        self.workers.value.save(self.run_dir / VALUE_FILE)
        lap("update")
        # 5. publish: a new version; the checkpoint and state exist before any replica can serve it
        version = state.version + 1
        ckpt = self.workers.learners.save(str(self.run_dir / "policies" / f"v{version}"), version)
        self.workers.learners.save_optimizer(str(self.run_dir / OPTIMIZER_FILE), version)  # AdamW goes on
        state.version, state.checkpoints[str(version)] = version, str(ckpt)
        state.consumed += steps.episode_ids
        state.rollout_versions[str(episode)] = {t.episode_id: t.policy_version for t in got.trajectories}
        self.save(state)
        self.publish(str(ckpt), version)
        lap("publish")
        state.metrics.append(episode_metrics(episode, version - 1, version, got, batch, similarity, values,
                                             policy_stats, value_stats, timings))
        state.episode = episode + 1
        self.save(state)
        write_report(self.run_dir, state)
        m = state.metrics[-1]
        if self.on_episode is not None:
            self.on_episode(m)
        self.log(f"[rl] episode {episode}: v{version - 1} success {m['success_rate']:.2f} over {m['rollouts']} "
                 f"rollouts ({m['rollout_rows']} steps + {m['expert_rows']} expert, sim {similarity:.3f}); clip "
                 f"{m['clip_fraction']:.3f}, ratio [{m['ratio_min']:.3f}, {m['ratio_max']:.3f}], value loss "
                 f"{m['value_loss']:.4f} -> published v{version}")

    def collect(self, state: RunState, label: str):
        n = self.cfg.rollouts_per_episode
        if self.on_collect is not None:
            self.on_collect(label, state.version, n)
        return self.workers.buffer.collect(n, state.version - self.cfg.max_staleness, self.cfg.collect_timeout_s,
                                           self.cfg.min_rollouts, self.cfg.poll_s)

    # ---- state ------------------------------------------------------------------------------------
    def start_or_resume(self) -> RunState:
        flat = {**to_flat_dict(self.cfg), "ablation": self.cfg.ablation}
        if RunState.exists(self.run_dir):
            state = RunState.load(self.run_dir)
            if state.config and _jsonable(state.config) != _jsonable(flat):
                changed = sorted(k for k in flat if _jsonable(state.config).get(k) != _jsonable(flat).get(k))
                self.log(f"[rl] resuming with changed settings: {changed}")
            ckpt = state.checkpoints[str(state.version)]
            self.log(f"[rl] resuming {self.run_dir} at RL episode {state.episode} on version {state.version} ({ckpt})")
            if state.version != self.base_version:
                self.workers.learners.load(ckpt)
                opt = self.run_dir / OPTIMIZER_FILE
                restored = opt.is_file() and self.workers.learners.load_optimizer(str(opt), state.version)
                self.log(f"[rl] optimizer state of v{state.version} " + (
                    f"restored from {opt}" if restored else f"not found in {opt}: AdamW restarts empty"))
            if (self.run_dir / VALUE_FILE).exists():
                self.workers.value.load(str(self.run_dir / VALUE_FILE))
            self.workers.buffer.forget(state.consumed)
            if state.version != self.base_version:
                self.publish(ckpt, state.version)  # Serve may have restarted on the base weights
            return state
        state = RunState(base_version=self.base_version, version=self.base_version,
                         checkpoints={str(self.base_version): self.base_checkpoint}, config=flat)
        self.log(f"[rl] value warm-up: {self.cfg.value_warmup_steps} steps on Monte-Carlo returns of the imitation set")
        state.warmup = self.workers.value.warmup()
        self.workers.value.save(str(self.run_dir / VALUE_FILE))
        self.save(state)
        return state

    def save(self, state: RunState) -> None:
        state.save(self.run_dir)


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=to_json))


# ---- in-process workers (no Ray): tests, debugging, a single machine without actors -------------------
def local_workers(cfg: RLConfig, checkpoint: str | Path, replay_dir: str | Path, experts) -> RLWorkers:
    """The same components as `syvla.rl.actors.start_workers`, as plain objects in this process (1 learner)."""
    from syvla.model.checkpoint import read_config, read_norm_stats
    from syvla.rl.guidance import SampleRetriever, clip_encoder
    from syvla.rl.learner import LearnerGroup, PolicyLearner
    from syvla.rl.rollouts import RolloutCollector
    from syvla.rl.value_trainer import ValueTrainer

    if cfg.num_learners != 1:
        raise ValueError("local_workers runs one learner in this process; use syvla.rl.actors.start_workers for more")
    policy_cfg = read_config(checkpoint)
    stats = read_norm_stats(checkpoint)
    retriever = None
    if cfg.use_expert_data:
        encoder = clip_encoder(cfg.clip_model, cfg.clip_checkpoint, cfg.device, cfg.seed)
        retriever = SampleRetriever(experts, encoder, cfg.retrieval, cfg.seed)
    return RLWorkers(buffer=RolloutCollector(replay_dir), retriever=retriever,
                     value=ValueTrainer(cfg, policy_cfg, stats, experts),
                     learners=LearnerGroup([PolicyLearner(checkpoint, cfg)]))
