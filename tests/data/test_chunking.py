"""Action chunks: padding and mask at episode ends, recorded values; model sample rows; view resizing."""

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pytest

from syvla import constants as K
from syvla.data import chunking as CH
from syvla.data.columns import list_column
from syvla.data.synthetic import synthetic_episode, synthetic_vqa


def _episode_with_actions(ep_id: int, actions: np.ndarray) -> pa.Table:
    t = synthetic_episode(ep_id, len(actions), image_size=16)
    return t.set_column(t.schema.get_field_index(K.ACTION), t.schema.field(K.ACTION), list_column(actions.astype(np.float32)))


def test_chunk_actions_recorded_values():
    a = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    chunks, mask = CH.chunk_actions(a, 4)
    assert chunks.shape == (3, 4, 2) and mask.shape == (3, 4)
    np.testing.assert_array_equal(chunks[0], [[1, 10], [2, 20], [3, 30], [3, 30]])
    np.testing.assert_array_equal(chunks[2], [[3, 30]] * 4)  # the last frame repeats its own action
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
    chunks, mask = CH.chunk_actions(a, 1)
    np.testing.assert_array_equal(chunks[:, 0], a)
    assert mask.all()
    with pytest.raises(ValueError, match="chunk_len"):
        CH.chunk_actions(a, 0)


def test_add_chunks_pads_at_each_episode_end_and_keeps_episodes_apart():
    a0 = np.arange(5 * 4, dtype=np.float32).reshape(5, 4)
    a1 = 100 + np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    table = pa.concat_tables([_episode_with_actions(0, a0), synthetic_vqa(7), _episode_with_actions(1, a1)])
    out = CH.add_chunks(table, chunk_len=4)
    assert out.schema == CH.PREPARED_SCHEMA
    rows = {(r[K.DATASET], r[K.EPISODE_ID], r[K.FRAME_INDEX]): r for r in out.to_pylist()}
    # episode 0, frame 3: frames 3, 4 then the last action twice, masked
    r = rows[("synthetic", 0, 3)]
    np.testing.assert_array_equal(r[K.ACTIONS], [a0[3], a0[4], a0[4], a0[4]])
    assert r[K.ACTION_MASK] == [True, True, False, False]
    # episode 1 never borrows actions from episode 0
    r = rows[("synthetic", 1, 0)]
    np.testing.assert_array_equal(r[K.ACTIONS], [a1[0], a1[1], a1[2], a1[2]])
    assert r[K.ACTION_MASK] == [True, True, True, False]
    r = rows[("vqa", 7, 0)]
    assert r[K.ACTIONS] == [] and r[K.ACTION_MASK] == []
    assert out.num_rows == 9


def test_default_chunk_is_fifty():
    out = CH.add_chunks(synthetic_episode(0, 60, image_size=16))
    masks = np.array(out.column(K.ACTION_MASK).to_pylist())
    assert masks.shape == (60, 50)
    assert masks[10].all() and masks[11].sum() == 49 and masks[59].sum() == 1


def test_add_chunks_needs_whole_episodes():
    ep = synthetic_episode(0, 10, image_size=16)
    with pytest.raises(ValueError, match="whole episodes"):
        CH.add_chunks(ep.slice(3, 5), 4)


def test_row_to_sample_robot_and_vqa():
    out = CH.add_chunks(pa.concat_tables([synthetic_episode(0, 6, image_size=24), synthetic_vqa(3, image_size=24)]), 4)
    robot, vqa = out.to_pylist()[0], out.to_pylist()[-1]
    s = CH.row_to_sample(robot)
    assert s.embodiment == "synthetic" and s.kind == "robot" and s.task == "pick up the block"
    assert s.cot is None and s.conversation is None
    assert list(s.images) == ["corner2", "topview", "gripperPOV"]
    assert all(v.dtype == np.uint8 and v.shape == (24, 24, 3) for v in s.images.values())
    assert s.state.dtype == np.float32 and s.state.shape == (7,)
    assert s.actions.shape == (4, 4) and s.action_mask.dtype == bool
    np.testing.assert_array_equal(s.actions, robot[K.ACTIONS])
    small = CH.row_to_sample(robot, image_size=(8, 12))
    assert small.images["topview"].shape == (8, 12, 3)
    v = CH.row_to_sample(vqa)
    assert v.kind == "vqa" and v.embodiment == "vqa"
    assert v.conversation[0]["role"] == "user" and v.actions.shape == (0, 0) and v.state.shape == (0,)
    # numpy-format rows (what Ray's numpy batches hold) convert the same way
    np_row = {k: (np.array(x, dtype=object) if k == K.ACTIONS else x) for k, x in robot.items()}
    np_row[K.ACTIONS] = np.array([np.asarray(a, np.float32) for a in robot[K.ACTIONS]], dtype=object)
    np.testing.assert_array_equal(CH.row_to_sample(np_row).actions, s.actions)
    samples = CH.batch_to_samples(out.slice(0, 2))
    assert len(samples) == 2 and samples[1].actions.shape == (4, 4)


@pytest.mark.parametrize(
    "field, value, match",
    [
        (K.IMAGES, [b"junk", b"junk", b"junk"], "cannot decode image.*view 'corner2'"),
        (K.IMAGE_VIEWS, ["a", "b"], "differ in length"),
        (K.IMAGE_VIEWS, ["a", "a", "b"], "repeats a view"),
        (K.KIND, "robots", "'kind'"),
        (K.CONVERSATION, "{not json", "'conversation' is not JSON"),
        (K.CONVERSATION, json.dumps([{"role": "user"}]), "'role', 'content'"),
        (K.ACTION_MASK, [True, False], "disagree"),
    ],
)
def test_row_to_sample_bad_fields_raise_naming_them(field, value, match):
    row = CH.add_chunks(synthetic_episode(0, 6, image_size=16), 4).to_pylist()[0]
    row[field] = value
    with pytest.raises((ValueError, KeyError), match=match):
        CH.row_to_sample(row)


def test_row_to_sample_needs_chunks_for_robot_rows():
    row = synthetic_episode(0, 3, image_size=16).to_pylist()[0]
    with pytest.raises(KeyError, match="chunk the dataset first"):
        CH.row_to_sample(row)


def test_resize_views_per_tower():
    img = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    views = {"a": img, "b": img[:16]}
    vlm, expert = CH.resize_views(views, 28), CH.resize_views(views, (14, 21))
    assert vlm["a"].shape == (28, 28, 3) and expert["b"].shape == (14, 21, 3)
    assert vlm["a"].dtype == np.uint8
    assert CH.resize_views({"a": img}, (32, 48))["a"] is img
    with pytest.raises(ValueError, match="view 'x'"):
        CH.resize_views({"x": img.astype(np.float32)}, 8)


def test_tensor_batch_shapes():
    out = CH.add_chunks(synthetic_episode(0, 5, image_size=16), 3)
    b = CH.tensor_batch(out, image_size=8)
    assert b["images"].shape == (5, 3, 8, 8, 3) and b["images"].dtype == np.uint8
    assert b["state"].shape == (5, 7) and b["actions"].shape == (5, 3, 4) and b["action_mask"].shape == (5, 3)
    with pytest.raises(KeyError, match="lacks view"):
        CH.tensor_batch(out, 8, views=["wrist"])


def test_chunk_actions_pads_with_the_hold_still_action():
    a = np.array([[1.0, 10.0], [2.0, 20.0]])
    chunks, mask = CH.chunk_actions(a, 3, pad=np.array([0.0, 7.0]))
    np.testing.assert_array_equal(chunks[0], [[1, 10], [2, 20], [0, 7]])
    np.testing.assert_array_equal(chunks[1], [[2, 20], [0, 7], [0, 7]])
    np.testing.assert_array_equal(mask, [[1, 1, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="pad must be one action"):
        CH.chunk_actions(a, 3, pad=np.zeros(3))


def _metaworld_episode(actions: np.ndarray) -> pa.Table:
    t = _episode_with_actions(0, actions)
    return t.set_column(t.schema.get_field_index(K.DATASET), t.schema.field(K.DATASET),
                        pa.array(["metaworld"] * t.num_rows))


def test_metaworld_chunks_hold_still_past_the_end_in_both_representations():
    from syvla.data.actions import from_eef_relative
    from syvla.sim import metaworld as mw

    # a Meta-World demo ending mid-motion (dx, dy, dz, grip): the padding must not go on moving
    acts = np.array([[0.5, 0.2, -0.1, 1.0], [0.3, 0.1, -0.05, -0.6]], np.float32)
    state = np.zeros((2, mw.STATE_DIM), np.float32)
    t = _metaworld_episode(acts)
    t = t.set_column(t.schema.get_field_index(K.STATE), t.schema.field(K.STATE), list_column(state))
    row = CH.add_chunks(t, 4).to_pylist()[1]
    np.testing.assert_array_equal(row[K.ACTIONS], np.array([acts[1]] + [[0, 0, 0, -0.6]] * 3, np.float32))
    assert row[K.ACTION_MASK] == [True, False, False, False]
    # EEF-relative: zero motion and rotation, the gripper kept; mapped back it is the native hold-still
    rel = CH.clean_and_chunk_table(t, lookup={("metaworld", 0): (2, 0, 2)}, chunk_len=4, representation="eef_relative")
    pad = np.array(rel.to_pylist()[1][K.ACTIONS][1])
    np.testing.assert_array_equal(pad, np.array([0, 0, 0, 0, 0, 0, -0.6], np.float32))
    np.testing.assert_allclose(from_eef_relative(pad, state[1], mw.EEF_SPEC), [0, 0, 0, -0.6], atol=1e-6)
    rel6 = CH.clean_and_chunk_table(t, lookup={("metaworld", 0): (2, 0, 2)}, chunk_len=4,
                                    representation="eef_relative", rotation="rot6d")
    np.testing.assert_array_equal(rel6.to_pylist()[1][K.ACTIONS][2],
                                  np.array([0, 0, 0, 1, 0, 0, 0, 1, 0, -0.6], np.float32))


def test_hold_still_per_action_type():
    from syvla.data.actions import EefSpec, hold_still

    last = np.array([0.1, 0.2, 0.3, 0.9, 0.1, 0.0, 0.0, 0.5], np.float32)  # position, quaternion, gripper
    delta = EefSpec(action_type="world_delta", action_dim=8, action_rotation=(3, 7), action_rotation_format="quat_wxyz",
                    gripper=7, fixed_rotation_wxyz=(1.0, 0.0, 0.0, 0.0))
    hold, rule = hold_still(last, "native", delta)
    np.testing.assert_array_equal(hold, [0, 0, 0, 1, 0, 0, 0, 0.5])  # identity rotation, gripper kept
    assert rule == "hold_still"
    absolute = dataclasses.replace(delta, action_type="absolute_pose")
    hold, rule = hold_still(last, "native", absolute)
    np.testing.assert_array_equal(hold, last)  # an absolute target holds by repeating itself
    assert rule == "repeat_last"
    assert hold_still(last, "native", None)[1] == "repeat_last"  # unknown robot: read as an absolute target
    with pytest.raises(ValueError, match="action representation"):
        hold_still(last, "joint_velocity")


def test_loss_mask_one_rule_for_numpy_and_torch():
    import torch

    mask = np.array([[True, False]])
    np.testing.assert_array_equal(CH.loss_mask(mask, False), mask)
    np.testing.assert_array_equal(CH.loss_mask(mask, True), [[True, True]])
    t = torch.tensor([[True, False]])
    assert torch.equal(CH.loss_mask(t, True), torch.ones(1, 2, dtype=torch.bool))
    assert CH.loss_mask(t, False) is t
