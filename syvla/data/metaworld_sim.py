"""Meta-World v3 as the project's simulator: expert demonstrations and a robot API.

No Ray here. Facts used below come from ../shared/notes/metaworld.md: the 39-d
observation (goal included), scripted experts per task, `info["success"]`,
500-step episodes, upside-down `corner*` cameras and the render settings that
make a 3-view rig cost ~10 ms per view on a CPU.

Public API:
    TASK_INSTRUCTIONS, TASK_PLANS, DEFAULT_VIEWS, instruction(task), plan_text(task)
    make_env(task, seed, image_size) -> (env, CameraRig)
    render_views(rig, env, views) -> {view: uint8 [H, W, 3]}
    run_expert_episode(task, seed, ...) -> pyarrow.Table in FRAME_SCHEMA
    SimRobot: reset(task, seed) -> obs; step_chunk(actions [T, 4]) -> (obs, success, done)
"""

from __future__ import annotations

import os

# MuJoCo picks its GL backend when first imported; headless machines need EGL
# (or OSMesa). Set before any mujoco import; an explicit user choice wins.
os.environ.setdefault("MUJOCO_GL", "egl")

import atexit  # noqa: E402
import warnings  # noqa: E402
import weakref  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from syvla import constants as K  # noqa: E402
from syvla.data import images  # noqa: E402
from syvla.data.schema import conform  # noqa: E402

DATASET_NAME = "metaworld"  # = embodiment name in syvla/model/config.py (METAWORLD)
STATE_DIM = 39  # full observation: hand, gripper, 2 objects (pos+quat), previous frame, goal
ACTION_DIM = 4  # xyz end-effector delta + gripper effort, each in [-1, 1]
MAX_PATH_LENGTH = 500  # Meta-World raises past this many steps without a reset
DEFAULT_VIEWS = ("corner2", "topview", "gripperPOV")  # = METAWORLD.cameras
CORNER2_POS = (0.75, 0.075, 0.7)  # a better whole-scene view than the stock corner2
SUCCESS_TAIL_STEPS = 5  # frames recorded after the first success, so policies learn to hold still

# Our own language annotations: Meta-World ships none. One instruction per
# task, and a short sub-task plan used as templated chain-of-thought labels.
# Plans have 1 step (reach), 2 steps (approach, then push/turn/pull) or
# 3 steps (approach, grasp, then move) so `_plan_step` can track progress
# from the observation alone.
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

_CONTACT_RADIUS = 0.06  # m: hand-to-object distance that counts as "at the object" (experts get within ~0.04)
_GRIPPER_CLOSED = 0.6  # obs[3] (finger opening, 1 = open) below this after contact = grasped


def _check_task(task: str) -> None:
    if task not in _TASKS:
        raise KeyError(f"unknown Meta-World task {task!r}; expected one of the 50 v3 tasks, e.g. 'reach-v3'")


def instruction(task: str) -> str:
    """Our natural-language instruction for a Meta-World v3 task name."""
    _check_task(task)
    return TASK_INSTRUCTIONS[task]


def plan_text(task: str, step: int | None = None, done: bool = False) -> str:
    """Templated chain-of-thought: the numbered sub-task plan, then the current step.

    e.g. "Plan: 1. move the gripper to the puck; 2. grasp the puck; 3. carry the
    puck to the goal. Now: 2. grasp the puck."
    """
    _check_task(task)
    steps = TASK_PLANS[task]
    text = "Plan: " + "; ".join(f"{i + 1}. {s}" for i, s in enumerate(steps)) + "."
    if done:
        return text + " Now: done, hold still."
    if step is not None:
        return text + f" Now: {step + 1}. {steps[step]}."
    return text


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


# Renderers still open at interpreter exit get freed after mujoco's own atexit
# hook has terminated the EGL display, which prints EGL errors. Our hook is
# registered after mujoco is imported (atexit runs hooks last-in first-out),
# so it closes the renderers while the display still exists.
_LIVE_RIGS: "weakref.WeakSet[CameraRig]" = weakref.WeakSet()
_HOOKED = False


def _close_live_rigs() -> None:
    for rig in list(_LIVE_RIGS):
        try:
            rig.close()
        except Exception:  # noqa: BLE001  (best effort at exit; the process is ending)
            pass


class CameraRig:
    """Offscreen renderer for a fixed set of Meta-World cameras at one image size.

    Applies the speed settings of the notes (no shadows, reflections, skybox;
    offsamples 0: ~10 ms instead of ~100 ms per 128 px view), moves corner2 to
    CORNER2_POS and flips the upside-down corner* views.
    """

    def __init__(self, model, image_size: int):
        import mujoco

        if image_size <= 0:
            raise ValueError(f"image_size must be > 0, got {image_size}")
        self.model = model
        self.image_size = image_size
        # Multisampling buffers are sized when the GL context is made: set before Renderer().
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, image_size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, image_size)
        cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "corner2")
        model.cam_pos[cid] = CORNER2_POS
        self.cameras = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        self._renderer = mujoco.Renderer(model, image_size, image_size)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
            self._renderer.scene.flags[flag] = 0
        global _HOOKED
        if not _HOOKED:
            atexit.register(_close_live_rigs)
            _HOOKED = True
        _LIVE_RIGS.add(self)

    def render(self, data, views=DEFAULT_VIEWS) -> dict[str, np.ndarray]:
        out = {}
        for view in views:
            if view not in self.cameras:
                raise KeyError(f"unknown Meta-World camera {view!r}; cameras: {self.cameras}")
            self._renderer.update_scene(data, camera=view)
            img = self._renderer.render()
            if view.startswith("corner"):
                img = np.flip(img, (0, 1))  # these cameras render upside down
            out[view] = np.ascontiguousarray(img)
        return out

    def close(self) -> None:
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.close()


def make_env(task: str, seed: int, image_size: int = 128):
    """A Meta-World v3 env for `task` with the object/goal layout drawn from `seed`,
    already reset, plus a CameraRig for it. Returns (env, rig).

    Uses the goal-observable variant: the 39-d observation includes the goal,
    and each seed gives its own layout (the same seed, the same layout).
    """
    _check_task(task)
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-goal-observable"](seed=int(seed))
    return env, CameraRig(env.model, image_size)


def render_views(rig: CameraRig, env, views=DEFAULT_VIEWS) -> dict[str, np.ndarray]:
    """{view: uint8 [H, W, 3]} of the env's current state."""
    return rig.render(env.data, views)


class SimRobot:
    """A simulated Meta-World robot with the observation format the policy server takes.

    robot = SimRobot(image_size=128)
    obs = robot.reset("reach-v3", seed=0)     # {"images": {view: uint8 HWC}, "state": float32[39]}
    obs, success, done = robot.step_chunk(actions)   # actions [T, 4], clipped to [-1, 1]

    A chunk stops early at the first success (done=True) or when the episode
    reaches max_steps (done=True). Envs and renderers are kept per task, so
    resets with new seeds are cheap (~10 ms); switching tasks costs ~1 s.
    """

    def __init__(self, image_size: int = 128, views=DEFAULT_VIEWS, max_steps: int = MAX_PATH_LENGTH):
        if image_size <= 0:
            raise ValueError(f"SimRobot.image_size must be > 0, got {image_size}")
        if not 0 < max_steps <= MAX_PATH_LENGTH:
            raise ValueError(f"SimRobot.max_steps must be in 1..{MAX_PATH_LENGTH}, got {max_steps}")
        self.image_size = image_size
        self.views = tuple(views)
        if not self.views:
            raise ValueError("SimRobot.views must name at least one camera")
        self.max_steps = max_steps
        self.task: str | None = None
        self.seed: int | None = None
        self.steps = 0
        self.success = False
        self.env = None
        self.rig: CameraRig | None = None
        self._obs: np.ndarray | None = None
        self._last_info: dict = {}

    @property
    def instruction(self) -> str:
        if self.task is None:
            raise RuntimeError("SimRobot.reset(task, seed) must be called first")
        return instruction(self.task)

    @property
    def dt(self) -> float:
        """Seconds per env step (Meta-World: 5 substeps x 2.5 ms = 12.5 ms, i.e. 80 Hz)."""
        return float(self.env.dt) if self.env is not None else 1.0 / 80

    @property
    def raw_state(self) -> np.ndarray:
        """The env's last observation, float64 [39]."""
        return self._obs

    def reset(self, task: str, seed: int) -> dict:
        _check_task(task)
        if task != self.task:
            self.close()
            self.env, self.rig = make_env(task, seed, self.image_size)
        else:
            self._relayout(seed)
        self.task, self.seed = task, int(seed)
        obs, _ = self.env.reset()
        self._obs = obs
        self.steps = 0
        self.success = False
        self._last_info = {}
        return self.observation()

    def _relayout(self, seed: int) -> None:
        # Same procedure as the goal-observable env's constructor (metaworld 3.1.1
        # env_dict.initialize): draw the layout from np.random seeded with `seed`,
        # then freeze it, leaving the global numpy RNG as it was.
        env = self.env
        st0 = np.random.get_state()
        np.random.seed(int(seed))
        try:
            env._freeze_rand_vec = False
            env.reset()
            env._freeze_rand_vec = True
            env.seed(int(seed))
        finally:
            np.random.set_state(st0)

    def observation(self) -> dict:
        if self._obs is None:
            raise RuntimeError("SimRobot.reset(task, seed) must be called first")
        return {"images": self.rig.render(self.env.data, self.views), "state": self._obs.astype(np.float32)}

    @property
    def done(self) -> bool:
        return self.success or self.steps >= self.max_steps

    def step(self, action) -> tuple[np.ndarray, bool, dict]:
        """One env step without rendering: (raw obs float64[39], success, info)."""
        if self._obs is None:
            raise RuntimeError("SimRobot.reset(task, seed) must be called first")
        if self.steps >= self.max_steps:
            raise RuntimeError(f"episode already at max_steps={self.max_steps}; call reset()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be {ACTION_DIM} finite numbers, got {np.asarray(action).tolist()}")
        obs, _, _, _, info = self.env.step(np.clip(a, -1.0, 1.0))
        self._obs = obs
        self.steps += 1
        self._last_info = info
        self.success = self.success or bool(info["success"])
        return obs, bool(info["success"]), info

    def step_chunk(self, actions) -> tuple[dict, bool, bool]:
        """Execute an action chunk [T, 4]; returns (observation, success, done).

        Stops at the first success or at max_steps; the observation is rendered
        once, after the last executed step.
        """
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != ACTION_DIM or a.shape[0] == 0:
            raise ValueError(f"actions must have shape [T, {ACTION_DIM}] with T >= 1, got {a.shape}")
        if self.done:
            raise RuntimeError("episode is over (success or max_steps); call reset()")
        for row in a:
            self.step(row)
            if self.done:
                break
        return self.observation(), self.success, self.done

    def close(self) -> None:
        if self.rig is not None:
            self.rig.close()
        if self.env is not None:
            self.env.close()
        self.env, self.rig, self.task, self._obs = None, None, None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_expert_episode(
    task: str,
    seed: int,
    image_size: int = 64,
    views=DEFAULT_VIEWS,
    max_steps: int = MAX_PATH_LENGTH,
    cot: bool = False,
    episode_id: int = 0,
    robot: SimRobot | None = None,
    tail_steps: int = SUCCESS_TAIL_STEPS,
) -> pa.Table:
    """Run the scripted expert once and return the episode as a FRAME_SCHEMA table.

    Row t holds the observation before step t and the (clipped) expert action
    taken from it. Recording stops `tail_steps` steps after the first success
    or at `max_steps`. `success` (every row) = info["success"] was ever 1.
    `cot` adds templated plan text per frame (see plan_text / _PlanTracker).
    Pass a SimRobot to reuse its env and renderer across episodes.
    """
    from metaworld.policies import ENV_POLICY_MAP

    _check_task(task)
    if max_steps <= 0 or max_steps > MAX_PATH_LENGTH:
        raise ValueError(f"max_steps must be in 1..{MAX_PATH_LENGTH}, got {max_steps}")
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
        first_success = None
        obs = robot.raw_state
        for t in range(max_steps):
            frames = robot.rig.render(robot.env.data, views)
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
            if first_success is not None and t - first_success >= tail_steps:
                break
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


__all__ = [
    "TASK_INSTRUCTIONS", "TASK_PLANS", "DEFAULT_VIEWS", "DATASET_NAME", "STATE_DIM", "ACTION_DIM",
    "instruction", "plan_text", "CameraRig", "make_env", "render_views", "SimRobot", "run_expert_episode",
]
