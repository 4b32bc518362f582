"""Every Meta-World fact in one place: names, dimensions, cameras, limits, the embodiment,
the EEF mapping, and our language annotations (instructions and templated plans).

Import-light on purpose (numpy and two small syvla config modules; no mujoco,
metaworld or torch), so configs, pipelines and tests can name the robot without
loading the simulator. The simulator itself is `syvla.sim.robot`. Measured facts
come from ../shared/notes/metaworld.md.

    EMBODIMENT        the model's EmbodimentConfig (39-d state, 4-d action, 3 cameras)
    EEF_SPEC          where the EEF pose lives in state/action (syvla.data.actions.EefSpec)
    instruction(task), plan_text(task, step), task_texts(selectors)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from syvla.data.actions import KNOWN_EEF_SPECS, hold_still
from syvla.model.config import EmbodimentConfig

DATASET_NAME = "metaworld"  # dataset = embodiment name in every table, checkpoint and request
STATE_DIM = 39  # full observation: hand, gripper, 2 objects (pos+quat), previous frame, goal
ACTION_DIM = 4  # xyz end-effector delta + gripper effort, each in [-1, 1]
CAMERAS = ("corner2", "topview", "gripperPOV")  # centre / top / gripper views, in the expert's order
CORNER2_POS = (0.75, 0.075, 0.7)  # a better whole-scene view than the stock corner2
CONTROL_HZ = 80.0  # env steps per second (5 substeps x 2.5 ms = 12.5 ms per step)
ROBOT_TYPE = "sawyer"  # LeRobot info.json robot_type
MAX_PATH_LENGTH = 500  # Meta-World raises past this many steps without a reset
SUCCESS_TAIL_STEPS = 10  # expert frames recorded after the first success: the hand goes on into the goal region
REST_STEPS = 10  # then frames of the hold-still action (no motion, gripper kept): the demo ends at rest

# 39-d observation as state, 4-d EEF-delta + gripper action, a centre / top / gripper camera rig.
EMBODIMENT = EmbodimentConfig(DATASET_NAME, state_dim=STATE_DIM, action_dim=ACTION_DIM, cameras=CAMERAS)

# Where the EEF pose lives in state and action, and how the 4-d action maps to the EEF-relative
# form: a data-format fact, so it lives with the other known robots in syvla.data.actions.
EEF_SPEC = KNOWN_EEF_SPECS[DATASET_NAME]


def hold_still_action(last_action) -> np.ndarray:
    """The native action that keeps the robot where it is: no mocap motion, the gripper command kept."""
    return hold_still(last_action, "native", EEF_SPEC)[0]

# Our own language annotations: Meta-World ships none. One instruction per
# task, and a short sub-task plan used as templated chain-of-thought labels.
# Plans have 1 step (reach), 2 steps (approach, then push/turn/pull) or
# 3 steps (approach, grasp, then move) so the expert's plan tracker
# (syvla.sim.expert) can follow progress from the observation alone.
_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "assembly-v3": ("put the nut onto the peg", ("move the gripper to the nut handle", "grasp the nut", "lift the nut over the peg and lower it onto the peg")),
    "basketball-v3": ("dunk the basketball into the hoop", ("move the gripper to the ball", "grasp the ball", "lift the ball above the hoop and drop it in")),
    "bin-picking-v3": ("move the puck from the left bin into the right bin", ("move the gripper to the puck in the left bin", "grasp the puck", "carry the puck over the right bin and lower it in")),
    "box-close-v3": ("put the lid on the box", ("move the gripper to the lid handle", "grasp the lid", "carry the lid over the box and lower it")),
    "button-press-topdown-v3": ("press the button down from the top", ("move the gripper above the button", "push the button straight down")),
    "button-press-topdown-wall-v3": ("press the button down from the top behind the wall", ("move the gripper above the button, over the wall", "push the button straight down")),
    "button-press-v3": ("press the button in from the front", ("move the gripper in front of the button", "push the button forward")),
    "button-press-wall-v3": ("press the button behind the wall from the front", ("move the gripper around the wall to the button", "push the button forward")),
    "coffee-button-v3": ("press the button on the coffee machine", ("move the gripper in front of the coffee machine button", "push the button forward")),
    "coffee-pull-v3": ("pull the mug away from the coffee machine to the goal", ("move the gripper to the mug", "grasp the mug", "pull the mug back to the goal")),
    "coffee-push-v3": ("push the mug under the coffee machine", ("move the gripper to the mug", "grasp the mug", "push the mug under the coffee machine")),
    "dial-turn-v3": ("turn the dial", ("move the gripper to the edge of the dial", "turn the dial around")),
    "disassemble-v3": ("take the nut off the peg", ("move the gripper to the nut handle", "grasp the nut", "lift the nut up off the peg")),
    "door-close-v3": ("close the door", ("move the gripper behind the open door", "push the door shut")),
    "door-lock-v3": ("lock the door by turning the lock down", ("move the gripper above the lock", "push the lock down")),
    "door-open-v3": ("open the door by pulling the handle", ("move the gripper to the door handle", "pull the door open")),
    "door-unlock-v3": ("unlock the door by turning the lock", ("move the gripper to the lock", "turn the lock sideways")),
    "drawer-close-v3": ("push the drawer closed", ("move the gripper in front of the open drawer", "push the drawer shut")),
    "drawer-open-v3": ("pull the drawer open", ("move the gripper to the drawer handle", "pull the drawer out")),
    "faucet-close-v3": ("turn the faucet handle to close the faucet", ("move the gripper to the faucet handle", "rotate the handle closed")),
    "faucet-open-v3": ("turn the faucet handle to open the faucet", ("move the gripper to the faucet handle", "rotate the handle open")),
    "hammer-v3": ("hammer the nail into the wall", ("move the gripper to the hammer handle", "grasp the hammer", "swing the hammer to drive in the nail")),
    "hand-insert-v3": ("put the gripper into the hole", ("move the gripper above the hole", "lower the gripper into the hole")),
    "handle-press-side-v3": ("press the handle down from the side", ("move the gripper above the handle from the side", "push the handle down")),
    "handle-press-v3": ("press the handle down", ("move the gripper above the handle", "push the handle down")),
    "handle-pull-side-v3": ("pull the handle up from the side", ("move the gripper under the handle from the side", "pull the handle up")),
    "handle-pull-v3": ("pull the handle up", ("move the gripper under the handle", "pull the handle up")),
    "lever-pull-v3": ("pull the lever up", ("move the gripper under the lever", "lift the lever up")),
    "peg-insert-side-v3": ("insert the peg into the hole from the side", ("move the gripper to the peg", "grasp the peg", "carry the peg to the hole and push it in")),
    "peg-unplug-side-v3": ("pull the peg out of the side hole", ("move the gripper to the peg", "grasp the peg", "pull the peg out sideways")),
    "pick-out-of-hole-v3": ("pick the peg out of the hole", ("move the gripper to the peg", "grasp the peg", "lift the peg out and carry it to the goal")),
    "pick-place-v3": ("pick up the puck and place it at the goal", ("move the gripper to the puck", "grasp the puck", "carry the puck to the goal")),
    "pick-place-wall-v3": ("pick up the puck and place it at the goal behind the wall", ("move the gripper to the puck", "grasp the puck", "lift the puck over the wall to the goal")),
    "plate-slide-back-side-v3": ("slide the plate sideways back out of the cabinet", ("move the gripper to the plate", "slide the plate sideways to the goal")),
    "plate-slide-back-v3": ("slide the plate back out of the cabinet", ("move the gripper to the plate", "slide the plate back to the goal")),
    "plate-slide-side-v3": ("slide the plate sideways into the cabinet", ("move the gripper to the plate", "slide the plate sideways into the cabinet")),
    "plate-slide-v3": ("slide the plate into the cabinet", ("move the gripper to the plate", "slide the plate forward into the cabinet")),
    "push-back-v3": ("push the puck back to the goal", ("move the gripper behind the puck", "push the puck back to the goal")),
    "push-v3": ("push the puck to the goal", ("move the gripper to the puck", "push the puck to the goal")),
    "push-wall-v3": ("push the puck around the wall to the goal", ("move the gripper to the puck", "push the puck around the wall to the goal")),
    "reach-v3": ("reach the red goal position", ("move the gripper to the red goal position",)),
    "reach-wall-v3": ("reach the goal position behind the wall", ("move the gripper over the wall to the goal position",)),
    "shelf-place-v3": ("pick up the puck and place it on the shelf", ("move the gripper to the puck", "grasp the puck", "lift the puck onto the shelf")),
    "soccer-v3": ("push the ball into the goal", ("move the gripper behind the ball", "push the ball into the goal")),
    "stick-pull-v3": ("use the stick to pull the box to the goal", ("move the gripper to the stick", "grasp the stick", "hook the box with the stick and pull it to the goal")),
    "stick-push-v3": ("use the stick to push the box to the goal", ("move the gripper to the stick", "grasp the stick", "push the box with the stick to the goal")),
    "sweep-into-v3": ("sweep the puck into the hole", ("move the gripper behind the puck", "sweep the puck into the hole")),
    "sweep-v3": ("sweep the puck off the table", ("move the gripper behind the puck", "sweep the puck off the edge of the table")),
    "window-close-v3": ("slide the window closed", ("move the gripper to the window handle", "slide the window shut")),
    "window-open-v3": ("slide the window open", ("move the gripper to the window handle", "slide the window open")),
}
TASK_INSTRUCTIONS: dict[str, str] = {t: v[0] for t, v in _TASKS.items()}
TASK_PLANS: dict[str, tuple[str, ...]] = {t: v[1] for t, v in _TASKS.items()}


def check_task(task: str) -> None:
    """Raise KeyError unless `task` is one of the 50 Meta-World v3 task names."""
    if task not in _TASKS:
        raise KeyError(f"unknown Meta-World task {task!r}; expected one of the 50 v3 tasks, e.g. 'reach-v3'")


def instruction(task: str) -> str:
    """Our natural-language instruction for a Meta-World v3 task name."""
    check_task(task)
    return TASK_INSTRUCTIONS[task]


def plan_text(task: str, step: int | None = None, done: bool = False) -> str:
    """Templated chain-of-thought: the numbered sub-task plan, then the current step.

    e.g. "Plan: 1. move the gripper to the puck; 2. grasp the puck; 3. carry the
    puck to the goal. Now: 2. grasp the puck."
    """
    check_task(task)
    steps = TASK_PLANS[task]
    text = "Plan: " + "; ".join(f"{i + 1}. {s}" for i, s in enumerate(steps)) + "."
    if done:
        return text + " Now: done, hold still."
    if step is not None:
        return text + f" Now: {step + 1}. {steps[step]}."
    return text


def task_texts(tasks: Sequence[str]) -> list[str]:
    """Task selectors -> instruction texts. A Meta-World task name (`reach-v3`) maps to its
    instruction; anything else is taken as the instruction text itself."""
    return [TASK_INSTRUCTIONS.get(t, t) for t in tasks]
