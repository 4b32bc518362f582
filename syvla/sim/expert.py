"""Scripted-expert episodes as frame-schema tables, with templated plan text (chain of thought).

No Ray here; the experts are Meta-World's own (`metaworld.policies`), run on a
`SimRobot`. syvla.sim.collect turns many of them into a dataset.

    run_expert_episode(task, seed, ...) -> pyarrow.Table in FRAME_SCHEMA
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

from syvla import constants as K
from syvla.data import images
from syvla.data.schema import conform
from syvla.sim.metaworld import (CAMERAS, DATASET_NAME, MAX_PATH_LENGTH, REST_STEPS, SUCCESS_TAIL_STEPS, TASK_PLANS,
                                 check_task, hold_still_action, instruction, plan_text)
from syvla.sim.robot import SimRobot

_CONTACT_RADIUS = 0.06  # m: hand-to-object distance that counts as "at the object" (experts get within ~0.04)
_GRIPPER_CLOSED = 0.6  # obs[3] (finger opening, 1 = open) below this after contact = grasped


class _PlanTracker:
    """Which plan step an expert is in, from the 39-d observation (coarse, latched).

    1-step plans stay at step 0. Otherwise step 0 lasts until the hand first
    comes within _CONTACT_RADIUS of the object (obs[0:3] vs obs[4:7]); 2-step
    plans then show step 1; 3-step plans show step 1 (grasp) until the fingers
    close and step 2 after. Tasks whose expert never gets that close stay at
    step 0 until success: these labels are templated, not human-annotated.
    """

    def __init__(self, task: str):
        self.n = len(TASK_PLANS[task])
        self.contact = False
        self.grasped = False

    def update(self, obs: np.ndarray) -> int:
        if np.linalg.norm(obs[0:3] - obs[4:7]) < _CONTACT_RADIUS:
            self.contact = True
        if self.contact and obs[3] < _GRIPPER_CLOSED:
            self.grasped = True
        if self.n == 1 or not self.contact:
            return 0
        if self.n == 2:
            return 1
        return 2 if self.grasped else 1


def run_expert_episode(
    task: str,
    seed: int,
    image_size: int = 64,
    views=CAMERAS,
    max_steps: int = MAX_PATH_LENGTH,
    cot: bool = False,
    episode_id: int = 0,
    robot: SimRobot | None = None,
    tail_steps: int = SUCCESS_TAIL_STEPS,
    rest_steps: int = REST_STEPS,
) -> pa.Table:
    """Run the scripted expert once and return the episode as a FRAME_SCHEMA table.

    Row t holds the observation before step t and the (clipped) expert action
    taken from it. After the first success the expert goes on for `tail_steps`
    steps (deeper into the goal region), then the episode ends at rest:
    `rest_steps` frames of the hold-still action (no motion, the gripper command
    kept; `metaworld.hold_still_action`), so a policy sees what "done" looks like
    and does. Recording also stops at `max_steps`. `success` (every row) =
    info["success"] was ever 1.
    `cot` adds templated plan text per frame (see plan_text / _PlanTracker).
    Pass a SimRobot to reuse its env and renderer across episodes.
    """
    from metaworld.policies import ENV_POLICY_MAP

    check_task(task)
    if max_steps <= 0 or max_steps > MAX_PATH_LENGTH:
        raise ValueError(f"max_steps must be in 1..{MAX_PATH_LENGTH}, got {max_steps}")
    if tail_steps < 0 or rest_steps < 0:
        raise ValueError(f"tail_steps and rest_steps must be >= 0, got {tail_steps} and {rest_steps}")
    views = tuple(views)
    own = robot is None
    if own:
        robot = SimRobot(image_size=image_size, views=views, max_steps=MAX_PATH_LENGTH)
    elif robot.image_size != image_size:
        raise ValueError(f"robot renders {robot.image_size} px images but image_size={image_size}")
    try:
        robot.reset(task, seed)
        policy = ENV_POLICY_MAP[task]()
        tracker = _PlanTracker(task) if cot else None
        rows: dict[str, list] = {k: [] for k in ("images", "state", "action", "cot")}
        first_success, rest_left, action = None, None, None
        obs = robot.raw_state
        for t in range(max_steps):
            frames = robot.rig.render(robot.env.data, views)
            if rest_left is not None:  # the rest phase: hold still after the last expert action
                action = hold_still_action(action)
            else:
                with warnings.catch_warnings():
                    # The experts warn that their gains exceed the action range; we clip, as the notes advise.
                    warnings.filterwarnings("ignore", message="Constant.*may be too high", category=UserWarning)
                    action = np.clip(policy.get_action(obs), -1.0, 1.0).astype(np.float32)
            if tracker is not None:
                step = tracker.update(obs)
                rows["cot"].append(plan_text(task, step, done=first_success is not None))
            else:
                rows["cot"].append(None)
            rows["images"].append([images.encode_png(frames[v], source=f"{task} seed {seed} view {v}") for v in views])
            rows["state"].append(obs.astype(np.float32))
            rows["action"].append(action)
            obs, success, _ = robot.step(action)
            if success and first_success is None:
                first_success = t
            if rest_left is not None:
                rest_left -= 1
                if rest_left <= 0:
                    break
            elif first_success is not None and t - first_success >= tail_steps:
                if rest_steps == 0:
                    break
                rest_left = rest_steps
        n = len(rows["state"])
        dt = robot.dt
        table = pa.table(
            {
                K.DATASET: [DATASET_NAME] * n,
                K.EPISODE_ID: [int(episode_id)] * n,
                K.FRAME_INDEX: list(range(n)),
                K.TIMESTAMP: [i * dt for i in range(n)],
                K.TASK: [instruction(task)] * n,
                K.COT: rows["cot"],
                K.IMAGE_VIEWS: [list(views)] * n,
                K.IMAGES: rows["images"],
                K.STATE: [s.tolist() for s in rows["state"]],
                K.ACTION: [a.tolist() for a in rows["action"]],
                K.SUCCESS: [first_success is not None] * n,
                K.KIND: [K.KIND_ROBOT] * n,
                K.CONVERSATION: [None] * n,
            }
        )
        return conform(table, source=f"metaworld {task} seed {seed}")
    finally:
        if own:
            robot.close()
