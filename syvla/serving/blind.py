"""Blind evaluation on real robots: which policy runs an episode is hidden from the robot side and the operator.

A blind server holds K checkpoints as policy versions 0..K-1 (`ServeConfig.blind_checkpoints`) and
assigns each new episode to one of them by `BlindSchedule`: within each group (the episode's
embodiment and instruction, i.e. its task) the episodes come in blocks of K, each block a fresh
random order of the K arms. Any prefix of a group is then balanced to within one episode per arm,
and a drift over the day (battery, lighting, a tired operator) hits every arm alike.

What stays hidden (docs/operator.md#blind-evaluation): episode ids carry the version only inside
their HMAC tag (`protocol.make_episode_id(..., blind=True)`); answers carry no policy version, no
timing and no checkpoint name; `/v1/metadata` and `/healthz` name no version. The replay buffer
keeps the truth: each episode record has its `policy_version` and its schedule slot under
`blind`, so RL trains on the right versions and `unblind` reports success per arm at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
from typing import Iterable, Mapping, Sequence

from syvla.intervals import success_rate


@dataclasses.dataclass(frozen=True)
class Assignment:
    version: int  # the arm (policy version) that serves the episode
    group: str  # embodiment and instruction
    block: int  # index of the block of K episodes within the group
    slot: int  # position within that block

    def record(self) -> dict:
        """What the episode's replay record keeps under `blind`."""
        return {"group": self.group, "block": self.block, "slot": self.slot}


class BlindSchedule:
    """Balanced, grouped, random assignment of new episodes to arms. Thread-safe.

    `seed` fixes every group's sequence (the schedule is reproducible from it and the groups'
    order of arrival); keep it from the operators.
    """

    def __init__(self, arms: Sequence[int], seed: int):
        arms = sorted({int(a) for a in arms})
        if len(arms) < 2:
            raise ValueError(f"a blind schedule needs at least 2 arms (policy versions), got {arms}")
        self.arms, self.seed = arms, int(seed)
        self._lock = threading.Lock()
        self._groups: dict[str, tuple[random.Random, list[int], int, int]] = {}  # rng, block, block index, used

    def assign(self, group: str) -> Assignment:
        with self._lock:
            if group not in self._groups:
                digest = hashlib.sha256(f"{self.seed}\0{group}".encode()).digest()
                self._groups[group] = (random.Random(int.from_bytes(digest[:8], "little")), [], -1, len(self.arms))
            rng, block, index, used = self._groups[group]
            if used == len(self.arms):  # the block is spent: draw the next order
                block = list(self.arms)
                rng.shuffle(block)
                index, used = index + 1, 0
            self._groups[group] = (rng, block, index, used + 1)
            return Assignment(version=block[used], group=group, block=index, slot=used)


def episode_group(info: Mapping) -> str:
    """The schedule's group of an episode start: embodiment and instruction (its task)."""
    return f"{info.get('embodiment')}|{info.get('instruction') or ''}"


def unblind(episodes: Iterable, checkpoints: Sequence[str]) -> dict:
    """Per-arm success with 95% Wilson intervals, and the schedule, from a blind server's replay episodes.

    `episodes`: `replay_buffer.Episode`s; only those started by the blind schedule (their start record
    has `blind`) count. Episodes without a reward are listed as unlabelled, not counted.
    `checkpoints[v]` names version v.
    """
    schedule, outcomes = [], {v: [] for v in range(len(checkpoints))}
    unlabelled = 0
    for ep in sorted(episodes, key=lambda e: (e.start_time or 0.0, e.episode_id)):
        if ep.blind is None:
            continue
        version = ep.policy_version
        schedule.append({"episode": ep.episode_id, **ep.blind, "version": version,
                         "checkpoint": checkpoints[version] if 0 <= version < len(checkpoints) else None,
                         "reward": ep.reward, "start_time": ep.start_time})
        if ep.reward is None:
            unlabelled += 1
        elif version in outcomes:
            outcomes[version].append(bool(ep.reward))
    arms = [{"version": v, "checkpoint": checkpoints[v], "labelled": len(o), "success": success_rate(o).to_dict()}
            for v, o in outcomes.items()]
    return {"arms": arms, "unlabelled": unlabelled, "episodes": len(schedule), "schedule": schedule}
