"""The one closed-loop episode runner: a policy drives a `SimRobot` chunk by chunk until success or max_steps.

The same loop serves in-process evaluation and robots driving a served policy;
only the policy adapter differs, and an adapter answers act(obs) -> chunk:

    LocalPolicy(policy)        a syvla.model.policy.Policy in this process (no Ray, no server)
    ServedPolicy(client)       a syvla.client.PolicyClient: every episode is a served episode, recorded in
                               the server's replay buffer, and its success is posted as the 0/1 reward

    summary = evaluate_policy(Policy.load(ckpt), EpisodeConfig(tasks=("reach-v3",), episodes=20))
    summary = evaluate_endpoint(Endpoint("http://127.0.0.1:8000"), EpisodeConfig(...), robots=4)
    summary["success_rate"], summary["per_task"]["reach-v3"], summary["results"][0]["seed"]

Seeds, the same for both: episode k of a task uses layout seed `layout_seed(cfg.seed, k)`;
each act call's flow noise is drawn from `act_seed(noise_seed, steps so far)`, where an
episode's noise seed defaults to its layout seed (`run_episode(..., noise_seed=)` pairs
episodes across checkpoints with the same noise). A served episode whose pinned policy
version the server retired mid-way (409) is aborted: no reward, left out of the success rate.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Protocol, Sequence

import numpy as np

from syvla.cli import field
from syvla.sim import metaworld as mw

_NOISE_STRIDE = 100_003  # a prime above any step count: (noise seed, step) pairs never collide


def layout_seed(first_seed: int, k: int) -> int:
    """The layout (object/goal placement) seed of episode k of a task in a run starting at `first_seed`."""
    return int(first_seed) + int(k)


def act_seed(noise_seed: int, step: int) -> int:
    """The flow-noise seed of the act call made after `step` env steps of an episode with `noise_seed`."""
    return int(noise_seed) * _NOISE_STRIDE + int(step)


REALTIME_MODES = ("off", "sync", "naive", "rtc")


@dataclasses.dataclass(frozen=True)
class EpisodeConfig:
    """Closed-loop Meta-World episodes: which tasks and layouts, how long, how chunks are executed."""

    tasks: tuple[str, ...] = field(("reach-v3",), "Meta-World v3 task names, e.g. reach-v3 pick-place-v3")
    episodes: int = field(20, "episodes per task")
    seed: int = field(1000, "layout seed of episode 0; episode k uses layout_seed(seed, k) = seed + k")
    max_steps: int = field(300, "env steps per episode (Meta-World's limit is 500)")
    execute_steps: int = field(10, "actions executed per chunk before the policy is asked again; 0 = the whole chunk")
    image_size: int = field(64, "camera pixels, square (collect_sim renders training demos at 64 by default)")
    think: bool = field(False, "ask for chain of thought before each chunk")
    realtime: str = field("off", "off: execute_steps actions, then ask again (the world waits); sync, naive or "
                                 "rtc: syvla.realtime.RealtimeController at control_hz in real time (rtc sends the "
                                 "committed prefix and delay, docs/serving.md#real-time-chunking)")
    control_hz: float = field(mw.CONTROL_HZ, "realtime: control steps per second")
    delay_ms: float = field(0.0, "realtime: network delay added to every act call (simulated)")
    max_in_flight: int = field(1, "realtime naive/rtc: act calls that may wait for their answers at once "
                                  "(pipelined when the round trip is long against the chunk)")

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.realtime not in REALTIME_MODES:
            raise ValueError(f"EpisodeConfig.realtime must be one of {REALTIME_MODES}, got {self.realtime!r}")
        if self.control_hz <= 0 or self.delay_ms < 0:
            raise ValueError("EpisodeConfig.control_hz must be > 0 and delay_ms >= 0")
        if self.max_in_flight < 1 or (self.max_in_flight > 1 and self.realtime not in ("naive", "rtc")):
            raise ValueError(f"EpisodeConfig.max_in_flight must be >= 1, and above 1 only with realtime naive or "
                             f"rtc, got {self.max_in_flight} with realtime {self.realtime!r}")
        if self.realtime != "off" and self.execute_steps == 0:
            raise ValueError("EpisodeConfig.realtime needs execute_steps >= 1 (actions before the next request)")
        if not self.tasks:
            raise ValueError("EpisodeConfig.tasks must name at least one task")
        unknown = [t for t in self.tasks if t not in mw.TASK_INSTRUCTIONS]
        if unknown:
            raise ValueError(f"EpisodeConfig.tasks has unknown Meta-World tasks {unknown}")
        if not 0 < self.max_steps <= mw.MAX_PATH_LENGTH:
            raise ValueError(f"EpisodeConfig.max_steps must be in 1..{mw.MAX_PATH_LENGTH}, got {self.max_steps}")
        if self.image_size <= 0:
            raise ValueError(f"EpisodeConfig.image_size must be > 0, got {self.image_size}")
        for name in ("episodes", "execute_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"EpisodeConfig.{name} must be >= 0, got {getattr(self, name)}")


def episode_jobs(cfg: EpisodeConfig) -> list[tuple[str, int]]:
    """Every (task, layout seed) of cfg, task by task."""
    return [(task, layout_seed(cfg.seed, k)) for task in cfg.tasks for k in range(cfg.episodes)]


@dataclasses.dataclass
class EpisodeResult:
    task: str
    seed: int  # layout seed
    noise_seed: int  # flow-noise seed of the episode (act_seed of each call derives from it)
    success: bool
    steps: int  # env steps executed
    chunks: int  # act calls answered
    closest: float | None = None  # smallest object (reach: hand) to goal distance in m, when the robot reports it
    episode_id: str | None = None  # the server's episode id (served episodes)
    policy_versions: list[int] = dataclasses.field(default_factory=list)  # versions that answered, sorted
    act_ms: list[float] = dataclasses.field(default_factory=list)  # latency of each act call, as the caller saw it
    aborted: str | None = None  # why a served episode was abandoned (its policy version was retired)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class EpisodeAborted(Exception):
    """Raised by an adapter's act when the episode can have no valid outcome."""


class EpisodePolicy(Protocol):
    def start(self, instruction: str) -> str | None:
        """Begin an episode; returns its id when the policy side keeps one."""

    def act(self, obs: dict, instruction: str, seed: int, think: bool, prefix=None, delay: int = 0
            ) -> tuple[np.ndarray, int]:
        """(action chunk float32 [chunk, 4] in env units, policy version) for obs {"images", "state"};
        `prefix`/`delay`: real-time chunking's committed prefix and expected delay (None: a plain request)."""

    def finish(self, success: bool) -> None:
        """End a (not aborted) episode with its 0/1 outcome."""


class LocalPolicy:
    """A syvla.model.policy.Policy in this process."""

    def __init__(self, policy, embodiment: str = mw.DATASET_NAME):
        self.policy, self.embodiment = policy, embodiment

    def start(self, instruction: str) -> None:
        return None

    def act(self, obs: dict, instruction: str, seed: int, think: bool, prefix=None, delay: int = 0
            ) -> tuple[np.ndarray, int]:
        out = self.policy.infer({"embodiment": self.embodiment, "images": obs["images"], "state": obs["state"],
                                 "instruction": instruction, "seed": seed, "think": think,
                                 "prefix_actions": prefix, "prefix_delay": delay})
        return out["actions"], out["policy_version"]

    def finish(self, success: bool) -> None:
        pass


class ServedPolicy:
    """A served policy through the robot client; posts each episode's success as its 0/1 reward."""

    def __init__(self, client, post_rewards: bool = True):
        self.client, self.post_rewards = client, post_rewards

    def start(self, instruction: str) -> str:
        return self.client.start_episode(instruction=instruction)

    def act(self, obs: dict, instruction: str, seed: int, think: bool, prefix=None, delay: int = 0
            ) -> tuple[np.ndarray, int]:
        from syvla.client import PolicyServerError

        try:
            out = self.client.act(obs["images"], obs["state"], instruction, think=think, seed=seed,
                                  prefix_actions=prefix, prefix_delay=delay)
        except PolicyServerError as err:
            if err.status != 409:
                raise
            # The episode's pinned version was retired mid-episode (several weight updates): it has no
            # valid outcome, so no reward is posted and it does not count towards the success rate.
            raise EpisodeAborted(err.message) from None
        return out.actions, out.policy_version

    def finish(self, success: bool) -> None:
        if self.post_rewards:
            self.client.post_reward(int(success))


def run_episode(policy: EpisodePolicy, robot, task: str, seed: int, cfg: EpisodeConfig,
                noise_seed: int | None = None) -> EpisodeResult:
    """One episode on `robot` (a SimRobot): act, execute the chunk's first cfg.execute_steps actions, repeat
    until success or cfg.max_steps (the robot's limit); then report the outcome to the policy side."""
    noise_seed = seed if noise_seed is None else noise_seed
    obs = robot.reset(task, seed)
    instruction = robot.instruction
    episode_id = policy.start(instruction)
    latencies, versions, done, success, aborted = [], set(), False, False, None
    if cfg.realtime != "off":
        stats, versions, aborted = run_realtime(policy, robot, instruction, noise_seed, cfg)
        latencies = [1e3 * s for s in stats.latencies_s]
        success, done = robot.success, True
    while not done:
        t0 = time.perf_counter()
        try:
            chunk, version = policy.act(obs, instruction, act_seed(noise_seed, robot.steps), cfg.think)
        except EpisodeAborted as err:
            aborted = str(err)
            break
        latencies.append((time.perf_counter() - t0) * 1e3)
        if version is not None:  # a blind server names none
            versions.add(int(version))
        obs, success, done = robot.step_chunk(chunk[: cfg.execute_steps] if cfg.execute_steps else chunk)
    if aborted is None:
        policy.finish(bool(success))
    return EpisodeResult(task=task, seed=int(seed), noise_seed=int(noise_seed), success=bool(success),
                         steps=robot.steps, chunks=len(latencies), closest=getattr(robot, "closest", None),
                         episode_id=episode_id, policy_versions=sorted(versions), act_ms=latencies, aborted=aborted)


def run_realtime(policy: EpisodePolicy, robot, instruction: str, noise_seed: int, cfg: EpisodeConfig,
                 soft_steps: int | None = None):
    """The rest of a reset robot's episode under syvla.realtime.RealtimeController (cfg.realtime's mode):
    (the controller's stats, policy versions seen, abort reason or None). `soft_steps`: the controller's."""
    from syvla.realtime import LatencyTracker, RealtimeController

    versions, calls, lock = set(), [0], threading.Lock()

    def request(obs, prefix, delay):
        with lock:  # requests may overlap (max_in_flight): each takes its own call number
            call, calls[0] = calls[0], calls[0] + 1
        chunk, version = policy.act(obs, instruction, act_seed(noise_seed, call), cfg.think, prefix, delay)
        if version is not None:
            versions.add(int(version))
        time.sleep(cfg.delay_ms / 1e3)
        return chunk

    ctl = RealtimeController(request, observe=robot.observation, execute=robot.step, control_hz=cfg.control_hz,
                             execute_steps=cfg.execute_steps, mode=cfg.realtime, late="hold",
                             hold_action=mw.hold_still_action,
                             tracker=LatencyTracker(initial_s=cfg.delay_ms / 1e3 + 0.05), soft_steps=soft_steps,
                             max_in_flight=cfg.max_in_flight)
    try:
        ctl.run(cfg.max_steps, stop=lambda: robot.done)
    except EpisodeAborted as err:
        return ctl.stats, versions, str(err)
    finally:
        ctl.close()
    return ctl.stats, versions, None


def run_episodes(policy: EpisodePolicy, cfg: EpisodeConfig, jobs: Sequence[tuple[str, int]],
                 log=None) -> list[EpisodeResult]:
    """`jobs` = [(task, layout seed), ...] in order on one SimRobot (one robot, one process)."""
    from syvla.sim.robot import SimRobot

    results = []
    with SimRobot(image_size=cfg.image_size, max_steps=cfg.max_steps) as robot:
        for task, seed in jobs:
            ep = run_episode(policy, robot, task, seed, cfg)
            results.append(ep)
            if log is not None:
                log(f"{ep.task} seed {ep.seed}: {'success' if ep.success else 'failure'} after {ep.steps} steps "
                    f"({ep.chunks} chunks)")
    return results


def summarize(results: Sequence[EpisodeResult]) -> dict:
    """Success rate overall and per task (aborted episodes excluded), each also as counts with its 95%
    Wilson interval ("success", "per_task_success": syvla.intervals.SuccessRate dicts), act latency
    percentiles (ms), the policy versions seen, and every episode as a dict under "results"."""
    from syvla.intervals import success_rate

    aborted = [ep for ep in results if ep.aborted]
    kept = [ep for ep in results if not ep.aborted]
    per_task: dict[str, list[bool]] = {}
    for ep in kept:
        per_task.setdefault(ep.task, []).append(ep.success)
    lat = np.array([ms for ep in results for ms in ep.act_ms] or [np.nan])
    return {
        "success_rate": float(np.mean([ep.success for ep in kept])) if kept else float("nan"),
        "per_task": {t: float(np.mean(s)) for t, s in sorted(per_task.items())},
        "success": success_rate([ep.success for ep in kept]).to_dict(),
        "per_task_success": {t: success_rate(s).to_dict() for t, s in sorted(per_task.items())},
        "episodes": len(kept),
        "aborted": len(aborted),
        "act_ms_p50": float(np.percentile(lat, 50)),
        "act_ms_p99": float(np.percentile(lat, 99)),
        "policy_versions": sorted({v for ep in kept for v in ep.policy_versions}),
        "results": [ep.to_dict() for ep in results],
    }


def evaluate_policy(policy, cfg: EpisodeConfig, log=None) -> dict:
    """Every episode of cfg in process with a syvla.model.policy.Policy; `summarize(...)` + "seconds"."""
    t0 = time.perf_counter()
    results = run_episodes(LocalPolicy(policy), cfg, episode_jobs(cfg), log)
    return {**summarize(results), "seconds": time.perf_counter() - t0}


# ---- served policies ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a served policy is and how robots talk to it (syvla.client.PolicyClient settings)."""

    url: str = field("http://127.0.0.1:8000", "base URL of the policy server")
    api_key: str = field("", "sent as `x-api-key` on every call; '' = none (an open server)")
    encoding: str = field("msgpack", "wire encoding of requests and responses: msgpack or json")
    timeout_s: float = field(60.0, "seconds per HTTP attempt")
    deadline_s: float = field(120.0, "seconds per call, retries included")
    post_rewards: bool = field(True, "post each episode's success as its 0/1 reward")

    def __post_init__(self):
        if not self.url:
            raise ValueError("Endpoint.url must be the server's URL")
        for name in ("timeout_s", "deadline_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Endpoint.{name} must be > 0, got {getattr(self, name)}")
        if self.encoding not in ("msgpack", "json"):
            raise ValueError(f"Endpoint.encoding must be msgpack or json, got {self.encoding!r}")

    def client(self):
        from syvla.client import PolicyClient

        return PolicyClient(self.url, api_key=self.api_key or None, encoding=self.encoding,
                            timeout=self.timeout_s, deadline=self.deadline_s)


def run_robot(endpoint: Endpoint, cfg: EpisodeConfig, jobs: Sequence[tuple[str, int]]) -> list[EpisodeResult]:
    """One robot (one process) running `jobs` against the endpoint, in order."""
    with endpoint.client() as client:
        return run_episodes(ServedPolicy(client, endpoint.post_rewards), cfg, jobs)


def evaluate_endpoint(endpoint: Endpoint, cfg: EpisodeConfig, robots: int = 1) -> dict:
    """Every episode of cfg on `robots` robot processes driving the endpoint; `summarize(...)` + "seconds"."""
    t0 = time.perf_counter()
    jobs = episode_jobs(cfg)
    if robots <= 1:
        results = run_robot(endpoint, cfg, jobs)
    else:
        import multiprocessing as mp

        # spawn: fresh processes (no forked MuJoCo/EGL or HTTP state); round-robin split of the jobs.
        with mp.get_context("spawn").Pool(robots) as pool:
            parts = pool.starmap(run_robot, [(endpoint, cfg, jobs[i::robots]) for i in range(robots)])
        results = [ep for part in parts for ep in part]
    return {**summarize(results), "seconds": time.perf_counter() - t0}
