"""Evaluate a served policy the way robots use it: Meta-World robots driving the HTTP endpoint.

No Ray and no torch in here: a robot process needs the client (numpy + httpx)
and the simulator. `pipelines/evaluate.py` (endpoint mode) and
`pipelines/sim_robot.py` call these functions.

    summary = evaluate_endpoint(EndpointEvalConfig(url="http://127.0.0.1:8000", tasks=("reach-v3",)))
    summary["success_rate"], summary["per_task"]["reach-v3"]

Every episode is a served episode: it is recorded in the server's replay
buffer and its success is posted as the 0/1 reward, so an evaluation run is
also RL data. An episode whose pinned policy version the server retired
mid-way (409) is reported as aborted, gets no reward and is left out of the
success rate.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from syvla.client import PolicyClient, PolicyServerError


@dataclasses.dataclass(frozen=True)
class EndpointEvalConfig:
    url: str = "http://127.0.0.1:8000"
    tasks: tuple[str, ...] = ("reach-v3",)  # Meta-World v3 task names
    episodes_per_task: int = 2
    seed: int = 0  # episode k of a task uses layout seed `seed + k`
    max_steps: int = 500  # env steps per episode (Meta-World's limit is 500)
    execute_steps: int = 0  # actions executed per chunk before asking again; 0 = the whole chunk
    image_size: int = 128  # pixels, square camera images
    encoding: str = "msgpack"  # or "json"
    api_key: str = ""
    think: bool = False  # ask for chain-of-thought before acting
    post_rewards: bool = True  # post success as the episode's 0/1 reward
    timeout_s: float = 60.0  # per HTTP attempt
    deadline_s: float = 120.0  # per call, retries included

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise ValueError("EndpointEvalConfig.tasks must name at least one task")
        for name in ("episodes_per_task", "max_steps", "image_size", "timeout_s", "deadline_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EndpointEvalConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.execute_steps < 0:
            raise ValueError(f"EndpointEvalConfig.execute_steps must be >= 0, got {self.execute_steps}")
        if self.encoding not in ("msgpack", "json"):
            raise ValueError(f"EndpointEvalConfig.encoding must be msgpack or json, got {self.encoding!r}")

    def client(self) -> PolicyClient:
        return PolicyClient(self.url, api_key=self.api_key or None, encoding=self.encoding,
                            timeout=self.timeout_s, deadline=self.deadline_s)


def run_episode(client: PolicyClient, robot, task: str, seed: int, cfg: EndpointEvalConfig) -> dict:
    """One served episode on a `SimRobot`: act, execute the chunk, repeat; post the 0/1 outcome."""
    obs = robot.reset(task, seed)
    instruction = robot.instruction
    episode_id = client.start_episode(instruction=instruction)
    latencies, versions, done, success, aborted = [], set(), False, False, None
    while not done:
        t0 = time.perf_counter()
        try:
            out = client.act(obs["images"], obs["state"], instruction, think=cfg.think,
                             seed=seed * 100_003 + robot.steps)
        except PolicyServerError as err:
            if err.status != 409:
                raise
            # The episode's pinned version was retired mid-episode (several weight updates): it has no
            # valid outcome, so no reward is posted and it does not count towards the success rate.
            aborted = err.message
            break
        latencies.append((time.perf_counter() - t0) * 1e3)
        versions.add(out.policy_version)
        chunk = out.actions[: cfg.execute_steps] if cfg.execute_steps else out.actions
        obs, success, done = robot.step_chunk(chunk)
    if cfg.post_rewards and aborted is None:
        client.post_reward(int(success))
    return {"task": task, "seed": seed, "episode_id": episode_id, "success": bool(success), "steps": robot.steps,
            "chunks": len(latencies), "policy_versions": sorted(versions), "act_ms": latencies, "aborted": aborted}


def run_robot(cfg: EndpointEvalConfig, jobs: list[tuple[str, int]]) -> list[dict]:
    """One robot (one process) running `jobs` = [(task, seed), ...] in order."""
    from syvla.data.metaworld_sim import SimRobot

    results = []
    with cfg.client() as client, SimRobot(image_size=cfg.image_size, max_steps=cfg.max_steps) as robot:
        for task, seed in jobs:
            results.append(run_episode(client, robot, task, seed, cfg))
    return results


def episode_jobs(cfg: EndpointEvalConfig) -> list[tuple[str, int]]:
    return [(task, cfg.seed + k) for task in cfg.tasks for k in range(cfg.episodes_per_task)]


def summarize(episodes: list[dict]) -> dict:
    """Success rate overall and per task (aborted episodes excluded), and act latency percentiles (client, ms)."""
    aborted = [ep for ep in episodes if ep.get("aborted")]
    episodes = [ep for ep in episodes if not ep.get("aborted")]
    per_task: dict[str, list[bool]] = {}
    for ep in episodes:
        per_task.setdefault(ep["task"], []).append(ep["success"])
    lat = np.array([ms for ep in episodes + aborted for ms in ep["act_ms"]] or [np.nan])
    return {
        "success_rate": float(np.mean([ep["success"] for ep in episodes])) if episodes else float("nan"),
        "per_task": {t: float(np.mean(s)) for t, s in sorted(per_task.items())},
        "episodes": len(episodes),
        "aborted": len(aborted),
        "act_ms_p50": float(np.percentile(lat, 50)),
        "act_ms_p99": float(np.percentile(lat, 99)),
        "policy_versions": sorted({v for ep in episodes for v in ep["policy_versions"]}),
    }


def evaluate_endpoint(cfg: EndpointEvalConfig, robots: int = 1) -> dict:
    """Run every (task, seed) of `cfg` on `robots` robot processes; returns `summarize(...)` + `results`."""
    jobs = episode_jobs(cfg)
    if robots <= 1:
        results = run_robot(cfg, jobs)
    else:
        import multiprocessing as mp

        # spawn: fresh processes (no forked MuJoCo/EGL or HTTP state); round-robin split of the jobs.
        with mp.get_context("spawn").Pool(robots) as pool:
            parts = pool.starmap(run_robot, [(cfg, jobs[i::robots]) for i in range(robots)])
        results = [ep for part in parts for ep in part]
    return {**summarize(results), "results": results}
