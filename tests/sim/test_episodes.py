"""The one closed-loop episode runner: seed rule, chunk execution, results and summary (no model, no server)."""

import numpy as np
import pytest

from syvla.sim.episodes import (EpisodeAborted, EpisodeConfig, act_seed, episode_jobs, layout_seed, run_episode,
                                run_episodes, summarize)


class StubPolicy:
    """An adapter that pushes +x and records what the runner asked for."""

    def __init__(self, abort_at: int | None = None):
        self.calls, self.started, self.finished, self.abort_at = [], [], [], abort_at

    def start(self, instruction):
        self.started.append(instruction)
        return f"ep{len(self.started)}"

    def act(self, obs, instruction, seed, think):
        if self.abort_at is not None and len(self.calls) == self.abort_at:
            raise EpisodeAborted("version retired")
        self.calls.append((seed, obs["state"].shape, think))
        return np.tile(np.float32([1.0, 0.0, 0.0, 0.0]), (50, 1)), 3

    def finish(self, success):
        self.finished.append(success)


def test_seed_rule_and_jobs():
    assert [layout_seed(1000, k) for k in range(3)] == [1000, 1001, 1002]
    assert act_seed(7, 20) == 7 * 100_003 + 20
    cfg = EpisodeConfig(tasks=("reach-v3", "push-v3"), episodes=2, seed=5)
    assert episode_jobs(cfg) == [("reach-v3", 5), ("reach-v3", 6), ("push-v3", 5), ("push-v3", 6)]
    with pytest.raises(ValueError, match="EpisodeConfig.tasks has unknown"):
        EpisodeConfig(tasks=("fly-v3",))
    with pytest.raises(ValueError, match="EpisodeConfig.max_steps"):
        EpisodeConfig(max_steps=501)


def test_runner_executes_chunks_and_reports_each_episode():
    cfg = EpisodeConfig(episodes=2, seed=3, max_steps=25, execute_steps=10, image_size=8)
    policy = StubPolicy()
    results = run_episodes(policy, cfg, episode_jobs(cfg))
    assert [(r.task, r.seed, r.noise_seed, r.steps, r.chunks, r.success) for r in results] == \
        [("reach-v3", 3, 3, 25, 3, False), ("reach-v3", 4, 4, 25, 3, False)]
    # the flow-noise seed of each act call: act_seed(episode noise seed, steps so far)
    assert [c[0] for c in policy.calls[:3]] == [act_seed(3, 0), act_seed(3, 10), act_seed(3, 20)]
    assert policy.calls[0][1:] == ((39,), False)
    assert policy.started == ["reach the red goal position"] * 2 and policy.finished == [False, False]
    assert results[0].episode_id == "ep1" and results[0].policy_versions == [3]
    assert results[0].closest is not None and results[0].closest > 0
    summary = summarize(results)
    assert (summary["success_rate"], summary["episodes"], summary["aborted"]) == (0.0, 2, 0)
    assert summary["results"][1]["seed"] == 4 and summary["policy_versions"] == [3]


def test_noise_seed_and_aborted_episode():
    from syvla.sim.robot import SimRobot

    cfg = EpisodeConfig(max_steps=20, execute_steps=0, image_size=8)
    with SimRobot(image_size=8, max_steps=20) as robot:
        policy = StubPolicy()
        paired = run_episode(policy, robot, "reach-v3", 11, cfg, noise_seed=99)
        assert (paired.seed, paired.noise_seed, paired.steps, paired.chunks) == (11, 99, 20, 1)
        assert policy.calls[0][0] == act_seed(99, 0)
        gone_policy = StubPolicy(abort_at=0)
        gone = run_episode(gone_policy, robot, "reach-v3", 12, cfg)
    assert gone.aborted == "version retired" and gone.chunks == 0 and gone_policy.finished == []
    summary = summarize([paired, gone])
    assert (summary["episodes"], summary["aborted"]) == (1, 1)


class RecordingPolicy(StubPolicy):
    """StubPolicy that also takes real-time chunking's prefix and delay, and records them."""

    def __init__(self):
        super().__init__()
        self.prefixes = []

    def act(self, obs, instruction, seed, think, prefix=None, delay=0):
        self.prefixes.append((None if prefix is None else len(prefix), delay))
        return super().act(obs, instruction, seed, think)


@pytest.mark.parametrize("mode", ["rtc", "naive", "sync"])
def test_realtime_episode_runs_at_the_control_rate_with_the_mode_s_requests(mode):
    import time

    from syvla.sim.robot import SimRobot

    cfg = EpisodeConfig(tasks=("reach-v3",), episodes=1, max_steps=40, image_size=32, realtime=mode,
                        control_hz=200.0, execute_steps=10)
    policy = RecordingPolicy()
    with SimRobot(image_size=32, max_steps=40) as robot:
        t0 = time.monotonic()
        ep = run_episode(policy, robot, "reach-v3", 7, cfg)
        seconds = time.monotonic() - t0
    assert ep.steps == 40 and not ep.success and ep.chunks >= 2 and policy.finished == [False]
    assert seconds > 40 / 200.0 * 0.9  # real time at the control rate
    sent = policy.prefixes[1:]  # the first request has no chunk to continue
    if mode == "rtc":
        assert all(n is not None and n > 0 for n, _ in sent)
    else:
        assert all(n is None and d == 0 for n, d in sent)
    with pytest.raises(ValueError, match="realtime"):
        EpisodeConfig(realtime="fast")
