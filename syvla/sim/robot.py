"""The simulated Meta-World robot: offscreen camera rig, envs per layout seed, and `SimRobot`.

No Ray here. Facts used below come from ../shared/notes/metaworld.md (and are
stated once in syvla.sim.metaworld): the 39-d observation (goal included),
`info["success"]`, 500-step episodes, upside-down `corner*` cameras and the
render settings that make a 3-view rig cost ~10 ms per view on a CPU.

    make_env(task, seed, image_size) -> (env, CameraRig)
    SimRobot: reset(task, seed) -> obs; step_chunk(actions [T, 4]) -> (obs, success, done)
"""

from __future__ import annotations

import os

# MuJoCo picks its GL backend when first imported; headless machines need EGL
# (or OSMesa). Set before any mujoco import; an explicit user choice wins.
os.environ.setdefault("MUJOCO_GL", "egl")

import atexit  # noqa: E402
import weakref  # noqa: E402

import numpy as np  # noqa: E402

from syvla.sim.metaworld import (  # noqa: E402
    ACTION_DIM, CAMERAS, CONTROL_HZ, CORNER2_POS, MAX_PATH_LENGTH, check_task, instruction)

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

    def render(self, data, views=CAMERAS) -> dict[str, np.ndarray]:
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
    check_task(task)
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-goal-observable"](seed=int(seed))
    return env, CameraRig(env.model, image_size)


class SimRobot:
    """A simulated Meta-World robot with the observation format the policy server takes.

    robot = SimRobot(image_size=128)
    obs = robot.reset("reach-v3", seed=0)     # {"images": {view: uint8 HWC}, "state": float32[39]}
    obs, success, done = robot.step_chunk(actions)   # actions [T, 4], clipped to [-1, 1]

    A chunk stops early at the first success (done=True) or when the episode
    reaches max_steps (done=True). Envs and renderers are kept per task, so
    resets with new seeds are cheap (~10 ms); switching tasks costs ~1 s.
    """

    def __init__(self, image_size: int = 128, views=CAMERAS, max_steps: int = MAX_PATH_LENGTH):
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
        # Smallest info["obj_to_target"] (m: object, or hand for reach tasks, to the goal) this episode.
        self.closest: float | None = None

    @property
    def instruction(self) -> str:
        if self.task is None:
            raise RuntimeError("SimRobot.reset(task, seed) must be called first")
        return instruction(self.task)

    @property
    def dt(self) -> float:
        """Seconds per env step (Meta-World: 5 substeps x 2.5 ms = 12.5 ms, i.e. 80 Hz)."""
        return float(self.env.dt) if self.env is not None else 1.0 / CONTROL_HZ

    @property
    def raw_state(self) -> np.ndarray:
        """The env's last observation, float64 [39]."""
        return self._obs

    def reset(self, task: str, seed: int) -> dict:
        check_task(task)
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
        self.closest = None
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
        if "obj_to_target" in info:
            dist = float(info["obj_to_target"])
            self.closest = dist if self.closest is None else min(self.closest, dist)
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
