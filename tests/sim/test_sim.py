"""Meta-World: expert episodes in the frame schema, the SimRobot API, and the Ray collection pipeline."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from syvla import constants as K
from syvla.data import images
from syvla.data.schema import FRAME_SCHEMA
from syvla.sim import metaworld as mw
from syvla.sim.expert import run_expert_episode
from syvla.sim.robot import SimRobot

SIZE = 32  # px: enough to tell views apart, cheap to render


@pytest.fixture(scope="module")
def robot():
    r = SimRobot(image_size=SIZE)
    yield r
    r.close()


@pytest.fixture(scope="module")
def episode(robot):
    return run_expert_episode("reach-v3", seed=3, image_size=SIZE, max_steps=150, cot=True, episode_id=11, robot=robot)


def test_metaworld_facts_module_is_import_light():
    """Configs name the robot through syvla.sim.metaworld without loading the simulator or a framework."""
    import subprocess
    import sys

    code = ("import sys, syvla.sim.metaworld as mw; "
            "print(sorted(m for m in ('torch', 'mujoco', 'metaworld', 'ray') if m in sys.modules), mw.EMBODIMENT.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] metaworld"


def test_instructions_and_plans_cover_all_50_tasks():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from metaworld.policies import ENV_POLICY_MAP

    assert set(mw.TASK_INSTRUCTIONS) == set(ALL_V3_ENVIRONMENTS) == set(ENV_POLICY_MAP)
    assert len(mw.TASK_INSTRUCTIONS) == 50
    assert mw.instruction("reach-v3") == "reach the red goal position"
    assert all(1 <= len(p) <= 3 for p in mw.TASK_PLANS.values())
    assert mw.plan_text("pick-place-v3", 1) == ("Plan: 1. move the gripper to the puck; 2. grasp the puck; "
                                                "3. carry the puck to the goal. Now: 2. grasp the puck.")
    with pytest.raises(KeyError, match="unknown Meta-World task 'fly-v3'"):
        mw.instruction("fly-v3")


def test_expert_episode_in_frame_schema(episode):
    t = episode
    n = t.num_rows
    assert t.schema == FRAME_SCHEMA
    assert 20 < n < 150  # the expert reaches in ~35-75 steps, then SUCCESS_TAIL_STEPS + REST_STEPS more
    assert t.column(K.SUCCESS).to_pylist() == [True] * n
    assert set(t.column(K.DATASET).to_pylist()) == {"metaworld"} and set(t.column(K.KIND).to_pylist()) == {"robot"}
    assert set(t.column(K.EPISODE_ID).to_pylist()) == {11}
    assert t.column(K.FRAME_INDEX).to_pylist() == list(range(n))
    np.testing.assert_allclose(t.column(K.TIMESTAMP).to_numpy(), np.arange(n) * 0.0125)
    assert set(t.column(K.TASK).to_pylist()) == {"reach the red goal position"}
    cot = t.column(K.COT).to_pylist()
    assert cot[0] == "Plan: 1. move the gripper to the red goal position. Now: 1. move the gripper to the red goal position."
    assert cot[-1].endswith("Now: done, hold still.")
    state = np.array(t.column(K.STATE).to_pylist(), np.float32)
    action = np.array(t.column(K.ACTION).to_pylist(), np.float32)
    assert state.shape == (n, 39) and action.shape == (n, 4)
    assert np.abs(action).max() <= 1.0
    goal = state[0, -3:]
    assert np.linalg.norm(state[-1, :3] - goal) < 0.05 < np.linalg.norm(state[0, :3] - goal)  # the hand reached the goal
    assert t.column(K.IMAGE_VIEWS)[0].as_py() == ["corner2", "topview", "gripperPOV"]
    # The demo ends at rest: REST_STEPS hold-still actions (no motion, the gripper command kept), the hand
    # deep inside the 5 cm success radius after SUCCESS_TAIL_STEPS more expert steps.
    rest = action[-mw.REST_STEPS:]
    np.testing.assert_array_equal(rest[:, :3], 0.0)
    np.testing.assert_array_equal(rest[:, 3], action[-mw.REST_STEPS - 1, 3])
    assert np.abs(action[-mw.REST_STEPS - 1, :3]).max() > 0  # the expert still moved before the rest
    assert np.linalg.norm(state[-1, :3] - goal) < 0.03


def test_expert_images_are_real_and_differ_between_views(episode):
    first = [images.decode(b) for b in episode.column(K.IMAGES)[0].as_py()]
    last = [images.decode(b) for b in episode.column(K.IMAGES)[-1].as_py()]
    for img in first:
        assert img.shape == (SIZE, SIZE, 3) and img.std() > 10  # not a constant frame
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(first[a].astype(int) - first[b]).mean() > 10
    assert np.abs(first[2].astype(int) - last[2]).mean() > 2  # the gripper camera moved with the hand


def test_state_matches_env_and_replay_reproduces_success(robot, episode):
    obs = robot.reset("reach-v3", seed=3)
    assert set(obs["images"]) == set(mw.CAMERAS)
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (39,)
    np.testing.assert_array_equal(obs["state"], episode.column(K.STATE)[0].as_py())
    np.testing.assert_array_equal(obs["images"]["topview"], images.decode(episode.column(K.IMAGES)[0].as_py()[1]))
    # The recorded expert actions, replayed in chunks of 10, succeed at the same step.
    actions = np.array(episode.column(K.ACTION).to_pylist(), np.float32)
    success = done = False
    for start in range(0, len(actions), 10):
        obs, success, done = robot.step_chunk(actions[start:start + 10])
        if done:
            break
    assert success and done
    assert robot.steps == len(actions) - mw.SUCCESS_TAIL_STEPS - mw.REST_STEPS  # stopped at the first success
    np.testing.assert_array_equal(obs["state"], episode.column(K.STATE)[robot.steps].as_py())
    with pytest.raises(RuntimeError, match="episode is over"):
        robot.step_chunk(actions[:1])


def test_sim_robot_chunks_layouts_and_errors(robot):
    a = robot.reset("reach-v3", seed=5)
    b = robot.reset("reach-v3", seed=6)
    assert not np.allclose(a["state"][-3:], b["state"][-3:])  # another seed, another goal
    again = robot.reset("reach-v3", seed=5)
    np.testing.assert_array_equal(a["state"], again["state"])
    np.testing.assert_array_equal(a["images"]["corner2"], again["images"]["corner2"])
    obs, success, done = robot.step_chunk(np.tile([1.0, 0.0, 0.0, 0.0], (8, 1)))  # +x for 8 steps
    assert robot.steps == 8 and not success and not done
    assert obs["state"][0] > a["state"][0] + 0.02
    assert robot.instruction == "reach the red goal position"
    with pytest.raises(ValueError, match=r"shape \[T, 4\]"):
        robot.step_chunk(np.zeros((3, 7)))
    short = SimRobot(image_size=8, views=("topview",), max_steps=3)
    try:
        short.reset("reach-v3", 0)
        obs, success, done = short.step_chunk(np.zeros((5, 4)))
        assert short.steps == 3 and done and not success
        assert list(obs["images"]) == ["topview"] and obs["images"]["topview"].shape == (8, 8, 3)
    finally:
        short.close()


def _load_pipeline():
    path = Path(__file__).resolve().parents[2] / "pipelines" / "collect_sim.py"
    spec = importlib.util.spec_from_file_location("collect_sim", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_collect_sim_config_validation():
    from syvla.sim.collect import CollectSimConfig, episode_plan

    with pytest.raises(ValueError, match="CollectSimConfig.tasks has unknown"):
        CollectSimConfig(tasks="reach-v3,fly-v3")
    with pytest.raises(ValueError, match="CollectSimConfig.cot_fraction"):
        CollectSimConfig(cot_fraction=1.5)
    plan = episode_plan(CollectSimConfig(tasks="reach-v3,push-v3", episodes_per_task=5, cot_fraction=0.2))
    assert [p.task for p in plan] == ["reach-v3"] * 5 + ["push-v3"] * 5
    assert sum(p.cot for p in plan) == 2 and len({p.seed for p in plan}) == 10
    cfg = _load_pipeline().parse_config(["--tasks", "push-v3", "--image_size", "48", "--overwrite", "true"])
    assert (cfg.tasks, cfg.image_size, cfg.overwrite, cfg.episodes_per_task) == ("push-v3", 48, True, 10)


@pytest.mark.slow
@pytest.mark.integration
def test_collect_sim_pipeline_with_ray(ray_local, tmp_path, capsys):
    from syvla.data.readers import read_dataset

    out = tmp_path / "mw"
    argv = ["--tasks", "reach-v3", "--episodes_per_task", "2", "--image_size", "32", "--cot_fraction", "0.5",
            "--max_steps", "150", "--output", str(out)]
    pipeline = _load_pipeline()
    assert pipeline.main(argv) == 0
    log = capsys.readouterr().out
    assert "2/2 reach-v3" in log and "successes by task: reach-v3 2/2" in log
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2 and info["fps"] == 80.0
    tables = list(read_dataset(out))
    assert [t.column(K.EPISODE_ID)[0].as_py() for t in tables] == [0, 1]
    for t in tables:
        assert t.column(K.SUCCESS).to_pylist() == [True] * t.num_rows
        assert set(t.column(K.TASK).to_pylist()) == {"reach the red goal position"}
    assert sum(t.column(K.COT)[0].as_py() is not None for t in tables) == 1
    # Same arguments again: reused, nothing collected.
    assert pipeline.main(argv) == 0
    assert "already holds this dataset" in capsys.readouterr().out
