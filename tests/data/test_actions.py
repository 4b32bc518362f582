"""Action representations: rotation conversions and absolute -> relative -> absolute round trips."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from syvla.data import actions as A
from syvla.sim import metaworld as mw

RNG = np.random.default_rng(0)


def _random_rotations(n: int) -> np.ndarray:
    q = RNG.normal(size=(n, 4))
    return A.quat_to_matrix(q / np.linalg.norm(q, axis=1, keepdims=True))


@pytest.mark.parametrize("fmt", sorted(A.ROTATION_WIDTHS))
def test_rotation_formats_round_trip(fmt):
    r = _random_rotations(500)
    np.testing.assert_allclose(A.to_matrix(A.from_matrix(r, fmt), fmt), r, atol=1e-12)


def test_rotation_recorded_values():
    rz90 = A.axis_angle_to_matrix(np.array([0, 0, np.pi / 2]))
    np.testing.assert_allclose(rz90, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(A.matrix_to_quat(rz90), [np.sqrt(0.5), 0, 0, np.sqrt(0.5)])
    np.testing.assert_allclose(A.matrix_to_euler_xyz(rz90), [0, 0, np.pi / 2])
    np.testing.assert_allclose(A.matrix_to_rot6d(rz90), [0, 1, 0, -1, 0, 0], atol=1e-15)
    # angles of 0 and pi are the edge cases of the axis-angle map
    np.testing.assert_allclose(A.matrix_to_axis_angle(np.eye(3)), [0, 0, 0])
    np.testing.assert_allclose(np.abs(A.matrix_to_axis_angle(np.diag([1.0, -1, -1]))), [np.pi, 0, 0], atol=1e-12)
    tiny = np.array([1e-10, -2e-10, 3e-10])
    np.testing.assert_allclose(A.matrix_to_axis_angle(A.axis_angle_to_matrix(tiny)), tiny, rtol=1e-6, atol=1e-20)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, 3, elements=st.floats(-3.0, 3.0)))
def test_axis_angle_round_trip_property(v):
    if np.linalg.norm(v) >= np.pi - 1e-6:
        v = v / np.linalg.norm(v) * (np.pi - 1e-3)  # keep angles inside [0, pi): the map is unique there
    np.testing.assert_allclose(A.matrix_to_axis_angle(A.axis_angle_to_matrix(v)), v, atol=1e-9)


def test_delta_and_temporal_delta_round_trip():
    a = RNG.normal(size=(20, 7))
    s = RNG.normal(size=(20, 7))
    np.testing.assert_allclose(A.delta_to_absolute(A.absolute_to_delta(a, s), s), a)
    d = A.temporal_delta(a)
    np.testing.assert_allclose(d[0], a[0])
    np.testing.assert_allclose(d[1], a[1] - a[0])
    np.testing.assert_allclose(A.temporal_cumsum(d), a, atol=1e-12)
    with pytest.raises(ValueError, match="equal shapes"):
        A.absolute_to_delta(a, s[:, :3])


# A 7-DoF arm: state = [joints(7), eef xyz, eef quat wxyz]; action = absolute target [xyz, euler, gripper].
ABSOLUTE = A.EefSpec(action_type="absolute_pose", action_dim=7, action_position=(0, 3), action_rotation=(3, 6),
                     action_rotation_format="euler_xyz", gripper=6, state_position=(7, 10), state_rotation=(10, 14),
                     state_rotation_format="quat_wxyz")
# A mobile-arm style dataset: world-frame position and axis-angle deltas in cm, no gripper.
DELTA = A.EefSpec(action_type="world_delta", action_dim=6, action_position=(0, 3), action_rotation=(3, 6),
                  action_rotation_format="axis_angle", state_position=(0, 3), state_rotation=(3, 6),
                  state_rotation_format="axis_angle", position_scale=0.01)


def _states_absolute(n):
    q = RNG.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.concatenate([RNG.normal(size=(n, 7)), RNG.normal(size=(n, 3)), q], axis=1)


@pytest.mark.parametrize("rotation", A.UNIFIED_ROTATIONS)
def test_absolute_pose_round_trip(rotation):
    n = 200
    s = _states_absolute(n)
    euler = A.matrix_to_euler_xyz(_random_rotations(n))  # canonical Euler angles round-trip exactly
    a = np.concatenate([RNG.normal(size=(n, 3)), euler, RNG.uniform(0, 1, (n, 1))], axis=1)
    rel = A.to_eef_relative(a, s, ABSOLUTE, rotation)
    assert rel.shape == (n, A.unified_dim(rotation)) and rel.dtype == np.float32
    back = A.from_eef_relative(rel, s, ABSOLUTE, rotation)
    np.testing.assert_allclose(back, a, atol=2e-5)  # float32 relative form
    np.testing.assert_allclose(A.from_eef_relative(rel.astype(np.float64), s, ABSOLUTE, rotation), back)


def test_relative_form_is_expressed_in_the_current_eef_frame():
    # EEF at (1, 0, 0) rotated 90 degrees about z; target 1 m along world +y from it, same orientation.
    s = np.concatenate([np.zeros(7), [1, 0, 0], A.matrix_to_quat(A.axis_angle_to_matrix([0, 0, np.pi / 2]))])
    a = np.array([1.0, 1.0, 0.0, 0.0, 0.0, np.pi / 2, 0.8])
    rel = A.to_eef_relative(a, s, ABSOLUTE)
    # world +y is the EEF's +x after a 90 degree turn about z
    np.testing.assert_allclose(rel, [1, 0, 0, 0, 0, 0, 0.8], atol=1e-6)


def test_world_delta_round_trip_and_no_gripper_slot_is_zero():
    n = 100
    s = np.concatenate([RNG.normal(size=(n, 3)), A.matrix_to_axis_angle(_random_rotations(n))], axis=1)
    a = np.concatenate([RNG.normal(size=(n, 3)), RNG.uniform(-0.5, 0.5, (n, 3))], axis=1)
    rel = A.to_eef_relative(a, s, DELTA)
    np.testing.assert_array_equal(rel[:, -1], 0.0)
    np.testing.assert_allclose(A.from_eef_relative(rel, s, DELTA), a, atol=1e-5)
    # the relative translation has the length of the world-frame move (a rotation preserves it)
    np.testing.assert_allclose(np.linalg.norm(rel[:, :3], axis=1), 0.01 * np.linalg.norm(a[:, :3], axis=1), rtol=1e-5)


def test_metaworld_mapping_recorded_values():
    state = np.zeros((1, 39))
    a = np.array([[1.0, 0.5, -1.0, 0.3]])
    rel = A.to_eef_relative(a, state, mw.EEF_SPEC)
    # hand rotated 90 degrees about y: EEF frame = (-z, y, x) of the world; 0.01 m per action unit
    np.testing.assert_allclose(rel, [[0.01, 0.005, 0.01, 0, 0, 0, 0.3]], atol=1e-7)
    acts = np.clip(RNG.normal(size=(50, 4)), -1, 1)
    np.testing.assert_allclose(A.from_eef_relative(A.to_eef_relative(acts, RNG.normal(size=(50, 39)), mw.EEF_SPEC),
                                                   np.zeros((50, 39)), mw.EEF_SPEC), acts, atol=1e-6)
    assert A.eef_spec("metaworld", {mw.DATASET_NAME: mw.EEF_SPEC}) is mw.EEF_SPEC


def test_specs_validate_and_unknown_dataset_raises():
    with pytest.raises(ValueError, match="exactly one of state_rotation and fixed_rotation_wxyz"):
        A.EefSpec(action_type="world_delta", action_dim=3)
    with pytest.raises(ValueError, match="cover indices 0..4"):
        A.EefSpec(action_type="world_delta", action_dim=5, fixed_rotation_wxyz=(1, 0, 0, 0))
    with pytest.raises(ValueError, match="action_type"):
        A.EefSpec(action_type="joint", action_dim=3, fixed_rotation_wxyz=(1, 0, 0, 0))
    with pytest.raises(ValueError, match="must span 4 values"):
        A.EefSpec(action_type="world_delta", action_dim=3, state_rotation=(3, 6), state_rotation_format="quat_wxyz")
    with pytest.raises(KeyError, match="no EefSpec registered for dataset 'bridge'"):
        A.eef_spec("bridge", {mw.DATASET_NAME: mw.EEF_SPEC})
    with pytest.raises(ValueError, match="action width 5"):
        A.to_eef_relative(np.zeros((2, 5)), np.zeros((2, 39)), mw.EEF_SPEC)
    with pytest.raises(ValueError, match="unified rotation"):
        A.to_eef_relative(np.zeros((2, 4)), np.zeros((2, 39)), mw.EEF_SPEC, rotation="quat_wxyz")
