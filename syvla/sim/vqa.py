"""Visual question answering from the simulator: questions whose answers the Meta-World state makes exact.

There is no VQA data set here, so the vision-language retention study (paper Table 2, App. A's 35% /
30% multimodal share) uses scenes of scripted-expert episodes and questions answered from the 39-d
observation of the very frame the image shows:

    task     "Which task does this scene show?"                  "push", "drawer open", ...
    gripper  "Is the gripper open or closed?"                    open (opening >= 0.9) / closed (<= 0.6)
    side     "Is the object to the left or the right of the gripper?"   sign of object x - hand x (>= 3 cm)
    drawer   "Is the drawer open?"   (drawer-open-v3)            handle moved >= 5 cm: yes; <= 5 mm: no
    door     "Is the door open?"     (door-open-v3)              handle moved >= 5 cm: yes; <= 5 mm: no
    holding  "Is the gripper holding the object?" (grasping tasks)   closed, object within 5 cm of the hand
                                                                 and lifted >= 2 cm: yes; open or object
                                                                 >= 8 cm away: no
A frame between two thresholds gets no question of that kind, so every answer is exact. Object colour
is not asked: Meta-World's objects have one fixed colour per task, so it would repeat the task question.

`make_vqa` writes LLaVA JSON (syvla.data.llava reads it) with the prompt camera's image per sample:
`train.json` from layout seeds `seed + k`, `heldout.json` from `heldout_seed + k` (disjoint scenes),
`images/`, and `report.json` (samples and answer counts per question kind, the majority-answer
baseline of the held-out split). `score` is the exact-match accuracy of a policy's greedy answers, with
each question's hit, so two checkpoints compare pair by pair on the same questions.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from syvla import constants as K
from syvla.cli import field
from syvla.sim import metaworld as mw

ORIGIN = "syvla.sim.vqa"  # report.json "origin": this generator wrote the folder
DEFAULT_TASKS = ("reach-v3", "push-v3", "pick-place-v3", "drawer-open-v3", "door-open-v3", "button-press-topdown-v3")
GRASPING = frozenset({"pick-place-v3", "peg-insert-side-v3", "basketball-v3", "bin-picking-v3", "coffee-pull-v3",
                      "pick-out-of-hole-v3", "pick-place-wall-v3", "shelf-place-v3"})
QUESTIONS = {
    "task": "Which task does this scene show?",
    "gripper": "Is the gripper open or closed?",
    "side": "Is the object to the left or the right of the gripper?",
    "drawer": "Is the drawer open?",
    "door": "Is the door open?",
    "holding": "Is the gripper holding the object?",
}
KINDS = tuple(QUESTIONS)
HAND, GRIP, OBJ = slice(0, 3), 3, slice(4, 7)


def task_answer(task: str) -> str:
    """'drawer-open-v3' -> 'drawer open'."""
    return re.sub(r"-v\d+$", "", task).replace("-", " ")


def answers(task: str, state: np.ndarray, first: np.ndarray) -> dict[str, str]:
    """{question kind: exact answer} for one frame: `state` its 39-d observation, `first` the episode's first."""
    state, first = np.asarray(state, np.float64), np.asarray(first, np.float64)
    out = {"task": task_answer(task)}
    grip = state[GRIP]
    if grip >= 0.9:
        out["gripper"] = "open"
    elif grip <= 0.6:
        out["gripper"] = "closed"
    dx = state[OBJ][0] - state[HAND][0]
    if abs(dx) >= 0.03:
        out["side"] = "right" if dx > 0 else "left"  # the robot faces +y: its right is +x
    moved = float(np.linalg.norm(state[OBJ][:2] - first[OBJ][:2]))
    for kind, opener in (("drawer", "drawer-open-v3"), ("door", "door-open-v3")):
        if task == opener:
            if moved >= 0.05:
                out[kind] = "yes"
            elif moved <= 0.005:
                out[kind] = "no"
    if task in GRASPING:
        near = float(np.linalg.norm(state[OBJ] - state[HAND]))
        lifted = state[OBJ][2] - first[OBJ][2]
        if grip <= 0.6 and near <= 0.05 and lifted >= 0.02:
            out["holding"] = "yes"
        elif grip >= 0.9 or near >= 0.08:
            out["holding"] = "no"
    return out


def normalize_answer(text: str) -> str:
    """Lower case, no surrounding space or final punctuation: 'Open.' == 'open'."""
    return re.sub(r"[\s.!?]+$", "", text.strip().lower())


@dataclasses.dataclass(frozen=True)
class SimVQAConfig:
    output: str = field("data/sim_vqa", "folder for train.json, heldout.json, images/ and report.json")
    tasks: tuple[str, ...] = field(DEFAULT_TASKS, "Meta-World tasks whose scenes are asked about")
    episodes_per_task: int = field(8, "expert episodes per task for the training split")
    heldout_episodes_per_task: int = field(4, "expert episodes per task for the held-out split")
    frames_per_episode: int = field(6, "frames per episode, evenly spaced from the first to the last")
    seed: int = field(300000, "training scenes: layout seeds seed + k")
    heldout_seed: int = field(400000, "held-out scenes: layout seeds heldout_seed + k (disjoint from seed's)")
    image_size: int = field(64, "camera pixels (the prompt camera, corner2)")

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        for task in self.tasks:
            try:
                mw.check_task(task)
            except KeyError as e:
                raise ValueError(f"SimVQAConfig.tasks: {e.args[0]}") from None
        if not self.tasks:
            raise ValueError("SimVQAConfig.tasks must name at least one task")
        for name in ("episodes_per_task", "frames_per_episode", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SimVQAConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.heldout_episodes_per_task < 0:
            raise ValueError(f"SimVQAConfig.heldout_episodes_per_task must be >= 0, got {self.heldout_episodes_per_task}")
        lo, hi = sorted([(self.seed, self.episodes_per_task), (self.heldout_seed, self.heldout_episodes_per_task)])
        if lo[0] + lo[1] > hi[0] and hi[1] > 0:
            raise ValueError(f"SimVQAConfig: training seeds {self.seed}.. and held-out seeds {self.heldout_seed}.. "
                             f"overlap for these episode counts")


def check_output(output: str | Path) -> None:
    """Raise FileExistsError unless `output` is absent, empty, or a folder this generator wrote."""
    out = Path(output)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    report = out / "report.json"
    try:
        ours = json.loads(report.read_text()).get("origin") == ORIGIN
    except (OSError, json.JSONDecodeError, AttributeError):
        ours = False
    if not ours:
        raise FileExistsError(f"{out} holds files the sim VQA generator did not write; it is left as it is. "
                              f"Choose another --output")


def _frames(n_rows: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n_rows - 1, num=min(k, n_rows)).round().astype(int).tolist()))


def _split(cfg: SimVQAConfig, seed: int, episodes: int, name: str, out: Path, log) -> list[dict]:
    from syvla.sim.expert import run_expert_episode
    from syvla.sim.robot import SimRobot

    camera = mw.EMBODIMENT.prompt_camera
    samples = []
    (out / "images").mkdir(parents=True, exist_ok=True)
    with SimRobot(image_size=cfg.image_size, views=(camera,)) as robot:
        for task in cfg.tasks:
            for k in range(episodes):
                table = run_expert_episode(task, seed=seed + k, image_size=cfg.image_size, views=(camera,), robot=robot)
                states = table.column(K.STATE).to_pylist()
                blobs = table.column(K.IMAGES).to_pylist()
                for t in _frames(len(states), cfg.frames_per_episode):
                    rel = f"images/{name}-{task}-{seed + k}-{t:03d}.png"
                    (out / rel).write_bytes(blobs[t][0])
                    for kind, answer in answers(task, states[t], states[0]).items():
                        samples.append({"id": f"{name}-{task}-{seed + k}-{t:03d}-{kind}", "image": rel, "kind": kind,
                                        "conversations": [{"from": "human", "value": "<image>\n" + QUESTIONS[kind]},
                                                          {"from": "gpt", "value": answer}]})
            log(f"{name}: {task} done ({episodes} episodes, {len(samples)} samples so far)")
    return samples


def answer_counts(samples: Iterable[dict]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = {}
    for s in samples:
        counts.setdefault(s["kind"], Counter())[s["conversations"][1]["value"]] += 1
    return {kind: dict(sorted(c.items())) for kind, c in sorted(counts.items())}


def majority_baseline(train: list[dict], heldout: list[dict]) -> dict:
    """Exact-match accuracy on `heldout` of always giving the training split's most common answer per kind."""
    train_counts = answer_counts(train)
    best = {kind: max(c, key=c.get) for kind, c in train_counts.items()}
    hits = sum(best.get(s["kind"]) == s["conversations"][1]["value"] for s in heldout)
    return {"answers": best, "accuracy": hits / len(heldout) if heldout else None, "n": len(heldout)}


def make_vqa(cfg: SimVQAConfig, log=print) -> dict:
    """Write the data set (see the module doc); returns the report."""
    check_output(cfg.output)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    train = _split(cfg, cfg.seed, cfg.episodes_per_task, "train", out, log)
    heldout = _split(cfg, cfg.heldout_seed, cfg.heldout_episodes_per_task, "heldout", out, log)
    for name, samples in (("train", train), ("heldout", heldout)):
        (out / f"{name}.json").write_text(json.dumps(samples, indent=0))
    report = {"origin": ORIGIN, "config": dataclasses.asdict(cfg), "train_samples": len(train),
              "heldout_samples": len(heldout), "train_answers": answer_counts(train),
              "heldout_answers": answer_counts(heldout), "majority_baseline": majority_baseline(train, heldout)}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def score(policy, heldout_json: str | Path, batch_size: int = 16, max_new_tokens: int = 8) -> dict:
    """Exact-match accuracy of `policy.answer` on a LLaVA JSON written by `make_vqa` (normalized answers),
    overall with its Wilson interval and per question kind."""
    from syvla.data import images
    from syvla.intervals import SuccessRate

    path = Path(heldout_json)
    samples = json.loads(path.read_text())
    hits, per_kind, examples = [], {}, []
    for i in range(0, len(samples), batch_size):
        part = samples[i : i + batch_size]
        pics = [images.decode((path.parent / s["image"]).read_bytes(), s["image"]) for s in part]
        questions = [s["conversations"][0]["value"].replace("<image>", "").strip() for s in part]
        got = policy.answer(pics, questions, max_new_tokens=max_new_tokens)
        for s, g in zip(part, got):
            ok = normalize_answer(g) == normalize_answer(s["conversations"][1]["value"])
            hits.append(ok)
            kind = s.get("kind", "all")
            n, k = per_kind.get(kind, (0, 0))
            per_kind[kind] = (n + 1, k + int(ok))
            if len(examples) < 12:
                examples.append({"id": s["id"], "answer": s["conversations"][1]["value"], "got": g})
    rate = SuccessRate(int(sum(hits)), len(hits))
    return {"accuracy": rate.to_dict(), "hits": [bool(h) for h in hits], "ids": [s["id"] for s in samples],
            "per_kind": {k: {"n": n, "correct": c} for k, (n, c) in sorted(per_kind.items())},
            "examples": examples}
