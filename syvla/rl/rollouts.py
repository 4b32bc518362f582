"""Rollouts from the serving replay buffer (App. A "RL Infra": the server writes every observation,
action chunk and the robot's 0/1 reward to disk; RL trains on that rollout dataset).

    collector = RolloutCollector("runs/replay")
    got = collector.collect(n=20, min_version=3, timeout_s=600)   # waits for rewarded episodes
    steps = rollout_steps(got.trajectories)                        # one sample per action chunk

One step is one policy decision (one served action chunk). An episode's reward is
given once, at its end (0/1 from a human or the simulator), so a trajectory's
rewards are 0 except the last, which is the episode's reward. Episodes without a
reward yet are not used (still running, never judged, or inside the operator's undo window) and are reported, as are
episodes whose steps carry more than one policy version (the server never mixes
versions within an episode; such a trajectory cannot be scored by one policy).

No Ray here: `syvla.rl.actors.RolloutBuffer` wraps `RolloutCollector`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from syvla.model.sample import Sample
from syvla.serving import replay_buffer as rb


@dataclasses.dataclass
class Trajectory:
    """One served episode with its reward: decoded steps in order."""

    episode_id: str
    policy_version: int  # the version that produced every chunk of it (episodes are pinned)
    embodiment: str
    instruction: str
    reward: int  # 0/1, the episode's outcome
    steps: list[dict]  # decoded step records: images {camera: uint8 [H, W, 3]}, state [S], actions [T, A], cot

    def __len__(self) -> int:
        return len(self.steps)

    def rewards(self) -> np.ndarray:
        """[T] float32: 0 at every step but the last, which holds the episode's 0/1 reward."""
        r = np.zeros(len(self.steps), np.float32)
        r[-1] = float(self.reward)
        return r

    def samples(self, score_steps: int = 0) -> list[Sample]:
        """The model `Sample` of each step: observation + the served chunk (raw units).

        action_mask marks the chunk steps the policy loss scores: the first
        `score_steps` (the actions the robot executed, which the reward judged),
        or every step when 0.
        """
        out = []
        for s in self.steps:
            actions = np.asarray(s["actions"], np.float32)
            mask = np.ones(actions.shape[0], bool)
            if score_steps:
                mask[score_steps:] = False
            out.append(Sample(embodiment=self.embodiment, images=s["images"], state=s["state"], task=self.instruction,
                              actions=actions, action_mask=mask, cot=s.get("cot")))
        return out


@dataclasses.dataclass
class Collected:
    """What one `collect` call found."""

    trajectories: list[Trajectory]  # rewarded episodes, oldest first, at most n
    waiting_for_reward: list[str]  # episodes of acceptable versions with steps but no reward (yet)
    stale: list[str]  # rewarded episodes older than min_version: dropped
    invalid: dict[str, str]  # episode id -> why it cannot be used (no steps, mixed versions)
    waited_s: float = 0.0

    @property
    def success_rate(self) -> float:
        return float(np.mean([t.reward for t in self.trajectories])) if self.trajectories else float("nan")

    def report(self) -> dict:
        return {"rollouts": len(self.trajectories), "success_rate": self.success_rate,
                "waiting_for_reward": len(self.waiting_for_reward), "stale": len(self.stale),
                "invalid": dict(self.invalid), "waited_s": round(self.waited_s, 2),
                "versions": sorted({t.policy_version for t in self.trajectories})}


class RolloutCollector:
    """Follows a live replay directory and assembles its episodes as they complete.

    Records are read incrementally (`ReplayReader.poll` with a cursor) and kept
    undecoded until an episode is handed out; episodes handed out, stale or
    invalid are forgotten, so memory holds only the episodes still in play.
    """

    def __init__(self, replay_dir: str | Path):
        self.reader = rb.ReplayReader(replay_dir)
        self._cursor: dict = {}
        self._episodes: dict[str, rb.Episode] = {}
        self._done: set[str] = set()  # handed out, stale or invalid: ignored from now on

    def poll(self) -> int:
        """Read the records written since the last poll; returns how many."""
        records, self._cursor = self.reader.poll(self._cursor, decode=False)
        for rec in records:
            eid = rec.get("episode_id")
            if isinstance(eid, str) and eid not in self._done:
                self._episodes.setdefault(eid, rb.Episode(eid)).add(rec)
        return len(records)

    def forget(self, episode_ids) -> None:
        """Never hand these out (e.g. consumed before a restart)."""
        for eid in episode_ids:
            self._done.add(eid)
            self._episodes.pop(eid, None)

    def take(self, n: int, min_version: int = 0) -> Collected:
        """Up to n rewarded episodes of version >= min_version (oldest first); they are handed out once."""
        ready, waiting, stale, invalid = [], [], [], {}
        now = time.time()
        for eid, ep in self._episodes.items():
            version = ep.policy_version
            if not ep.settled(now):  # no reward yet, withdrawn, or still inside the operator's undo window
                if ep.steps and version is not None and version >= min_version:
                    waiting.append(eid)
                continue
            problem = _problem(ep)
            if problem:
                invalid[eid] = problem
            elif version < min_version:
                stale.append(eid)
            else:
                ready.append(ep)
        ready.sort(key=lambda e: (e.start_time or 0.0, e.episode_id))
        chosen = ready[:n]
        self.forget([e.episode_id for e in chosen] + stale + list(invalid))
        return Collected([_trajectory(ep) for ep in chosen], sorted(waiting), sorted(stale), invalid)

    def ready(self, min_version: int = 0) -> int:
        return sum(1 for ep in self._episodes.values()
                   if ep.settled() and ep.policy_version is not None and ep.policy_version >= min_version
                   and not _problem(ep))

    def collect(self, n: int, min_version: int = 0, timeout_s: float = 600.0, min_rollouts: int = 1,
                poll_s: float = 1.0, log=None) -> Collected:
        """Wait until n rewarded episodes of version >= min_version are in, then take them.

        After timeout_s, returns what is there if that is at least min_rollouts,
        else raises TimeoutError (the controller's state is saved; a restart resumes).
        """
        t0 = time.monotonic()
        last_log = t0
        while True:
            self.poll()
            have = self.ready(min_version)
            waited = time.monotonic() - t0
            if have >= n or (waited >= timeout_s and have >= min_rollouts):
                got = self.take(n, min_version)
                got.waited_s = waited
                return got
            if waited >= timeout_s:
                raise TimeoutError(f"only {have} of the {min_rollouts} rewarded episodes needed (version >= "
                                   f"{min_version}) arrived in {timeout_s:.0f} s in {self.reader.root}")
            if log is not None and time.monotonic() - last_log > 30:
                log(f"[rollouts] {have}/{n} rewarded episodes of version >= {min_version} after {waited:.0f} s")
                last_log = time.monotonic()
            time.sleep(poll_s)


def _problem(ep: rb.Episode) -> str:
    if not ep.steps:
        return "no steps"
    versions = {s.get("policy_version") for s in ep.steps}
    if len(versions) > 1 or (ep.policy_version is not None and versions != {ep.policy_version}):
        return f"mixed policy versions {sorted(v for v in versions | {ep.policy_version} if v is not None)}"
    if any(s.get("actions") is None or s.get("images") is None for s in ep.steps):
        return "a step without actions or images"
    return ""


def _trajectory(ep: rb.Episode) -> Trajectory:
    steps = [rb.decode_record(s) for s in ep.steps]  # already in step order (rb.Episode.add)
    first = steps[0]
    return Trajectory(ep.episode_id, int(ep.policy_version), ep.embodiment or first["embodiment"],
                      ep.instruction or first.get("instruction") or "", int(ep.reward), steps)


@dataclasses.dataclass
class RolloutSteps:
    """The chunk steps of several trajectories, flattened: what advantages and the policy batch use."""

    samples: list[Sample]  # model samples, trajectory after trajectory
    rewards: np.ndarray  # [M] float32: 0 except each trajectory's last step (its 0/1 reward)
    versions: np.ndarray  # [M] int64: the behaviour policy version of each step
    bounds: list[tuple[int, int]]  # [start, stop) of each trajectory in the flat arrays
    episode_ids: list[str]  # one per trajectory

    def __len__(self) -> int:
        return len(self.samples)


def rollout_steps(trajectories: list[Trajectory], score_steps: int = 0) -> RolloutSteps:
    """Flatten trajectories into chunk steps (see `Trajectory.samples` for score_steps)."""
    samples, rewards, versions, bounds = [], [], [], []
    for traj in trajectories:
        start = len(samples)
        samples += traj.samples(score_steps)
        rewards.append(traj.rewards())
        versions.append(np.full(len(traj), traj.policy_version, np.int64))
        bounds.append((start, len(samples)))
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    return RolloutSteps(samples, cat(rewards, np.float32), cat(versions, np.int64), bounds,
                        [t.episode_id for t in trajectories])
