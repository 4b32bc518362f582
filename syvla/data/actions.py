"""Action representations: absolute, delta, and the unified EEF-relative form.

Conventions (also in docs/architecture.md, "Action representations"):

* Poses are (position [3] in metres, rotation [3, 3]) in the robot base ("world") frame.
  Quaternions are (w, x, y, z); axis-angle is the rotation vector (axis * angle,
  angle in [0, pi]); 6D is the first two columns of the rotation matrix,
  (r11, r21, r31, r12, r22, r32) (Zhou et al., 2019); Euler is extrinsic x-y-z
  (roll, pitch, yaw): R = Rz(yaw) @ Ry(pitch) @ Rx(roll).
* absolute: the action is the target itself (a joint or EEF pose target).
* delta: ``delta = target - current state`` (:func:`absolute_to_delta`), or the
  temporal difference ``a_t - a_{t-1}`` with ``a_{-1} = 0`` (:func:`temporal_delta`),
  so that a cumulative sum inverts it exactly.
* EEF-relative (unified across embodiments; the scaling study in
  ``seeds/000_*`` found it critical for cross-embodiment transfer): the target
  EEF pose expressed in the *current* EEF frame of the same frame t,
  ``dp = R_t^T (p_target - p_t)`` and ``dR = R_t^T R_target``, written as
  ``[dx, dy, dz, rx, ry, rz, gripper]`` (axis-angle, 7 values) or
  ``[dx, dy, dz, r6d(6), gripper]`` (10 values). The gripper command is copied
  as is (absolute, the dataset's own units); a dataset without a gripper gets 0.
  Each frame's action is relative to that frame's own state, so a chunk holds a
  sequence of per-step relative actions.
* Which slices of a dataset's state and action hold the EEF pose is an
  :class:`EefSpec`. The robots this package knows are in :data:`KNOWN_EEF_SPECS`
  (Meta-World's is also ``syvla.sim.metaworld.EEF_SPEC``); callers pass their own by
  dataset name to :func:`eef_spec` and to the prepare step.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from syvla import constants as K
from syvla.data.columns import combine, list_column, vectors

ROTATION_WIDTHS = {"axis_angle": 3, "quat_wxyz": 4, "euler_xyz": 3, "rot6d": 6}
ACTION_TYPES = ("absolute_pose", "world_delta")
UNIFIED_ROTATIONS = ("axis_angle", "rot6d")


# ---- rotations (batched over leading dimensions) ---------------------------
def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(w, x, y, z) [..., 4] -> [..., 3, 3]; the quaternion is normalized first."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    r = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )
    return r.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(r: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> (w, x, y, z) with w >= 0 (Shepperd's method: stable for every angle)."""
    r = np.asarray(r, np.float64)
    m = r.reshape(-1, 3, 3)
    tr = np.trace(m, axis1=1, axis2=2)
    diag = np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1)
    pick = np.argmax(diag, axis=1)
    q = np.empty((m.shape[0], 4))
    for k in range(4):
        sel = pick == k
        if not np.any(sel):
            continue
        a = m[sel]
        if k == 0:
            s = np.sqrt(1.0 + tr[sel]) * 2
            q[sel] = np.stack([0.25 * s, (a[:, 2, 1] - a[:, 1, 2]) / s,
                               (a[:, 0, 2] - a[:, 2, 0]) / s, (a[:, 1, 0] - a[:, 0, 1]) / s], 1)
        else:
            i, j, l = (k - 1, k % 3, (k + 1) % 3)
            s = np.sqrt(1.0 + a[:, i, i] - a[:, j, j] - a[:, l, l]) * 2
            v = np.empty((a.shape[0], 4))
            v[:, 0] = (a[:, l, j] - a[:, j, l]) / s
            v[:, 1 + i] = 0.25 * s
            v[:, 1 + j] = (a[:, j, i] + a[:, i, j]) / s
            v[:, 1 + l] = (a[:, l, i] + a[:, i, l]) / s
            q[sel] = v
    q = np.where(q[:, :1] < 0, -q, q)
    return q.reshape(r.shape[:-2] + (4,))


def axis_angle_to_matrix(v: np.ndarray) -> np.ndarray:
    """Rotation vector [..., 3] -> [..., 3, 3] (via the quaternion: exact near 0 and pi)."""
    v = np.asarray(v, np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = angle / 2
    # sin(a/2)/a -> 1/2 as a -> 0; the series keeps tiny rotations exact.
    scale = np.where(angle > 1e-8, np.sin(half) / np.where(angle > 1e-8, angle, 1.0), 0.5 - angle**2 / 48)
    return quat_to_matrix(np.concatenate([np.cos(half), v * scale], axis=-1))


def matrix_to_axis_angle(r: np.ndarray) -> np.ndarray:
    q = matrix_to_quat(r)
    xyz_norm = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2 * np.arctan2(xyz_norm, q[..., :1])
    small = xyz_norm <= 1e-8  # then w is ~1 and angle/sin(angle/2) -> 2/w
    scale = np.where(small, 2.0 / np.where(small, q[..., :1], 1.0), angle / np.where(small, 1.0, xyz_norm))
    return q[..., 1:] * scale


def euler_xyz_to_matrix(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, np.float64)
    cr, cp, cy = np.cos(e[..., 0]), np.cos(e[..., 1]), np.cos(e[..., 2])
    sr, sp, sy = np.sin(e[..., 0]), np.sin(e[..., 1]), np.sin(e[..., 2])
    r = np.stack(
        [
            cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
            sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
            -sp, cp * sr, cp * cr,
        ],
        axis=-1,
    )
    return r.reshape(e.shape[:-1] + (3, 3))


def matrix_to_euler_xyz(r: np.ndarray) -> np.ndarray:
    r = np.asarray(r, np.float64)
    pitch = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    roll = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    yaw = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.stack([roll, pitch, yaw], axis=-1)


def rot6d_to_matrix(d: np.ndarray) -> np.ndarray:
    """6D -> rotation by Gram-Schmidt on the two stored columns."""
    d = np.asarray(d, np.float64)
    a1, a2 = d[..., 0:3], d[..., 3:6]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    a2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / np.linalg.norm(a2, axis=-1, keepdims=True)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)


def matrix_to_rot6d(r: np.ndarray) -> np.ndarray:
    r = np.asarray(r, np.float64)
    return np.concatenate([r[..., :, 0], r[..., :, 1]], axis=-1)


_TO_MATRIX = {"axis_angle": axis_angle_to_matrix, "quat_wxyz": quat_to_matrix,
              "euler_xyz": euler_xyz_to_matrix, "rot6d": rot6d_to_matrix}
_FROM_MATRIX = {"axis_angle": matrix_to_axis_angle, "quat_wxyz": matrix_to_quat,
                "euler_xyz": matrix_to_euler_xyz, "rot6d": matrix_to_rot6d}


def to_matrix(x: np.ndarray, fmt: str) -> np.ndarray:
    if fmt not in _TO_MATRIX:
        raise ValueError(f"rotation format {fmt!r} unknown; one of {sorted(_TO_MATRIX)}")
    return _TO_MATRIX[fmt](x)


def from_matrix(r: np.ndarray, fmt: str) -> np.ndarray:
    if fmt not in _FROM_MATRIX:
        raise ValueError(f"rotation format {fmt!r} unknown; one of {sorted(_FROM_MATRIX)}")
    return _FROM_MATRIX[fmt](r)


# ---- simple (joint-space or any-space) representations ---------------------
def absolute_to_delta(actions: np.ndarray, states: np.ndarray) -> np.ndarray:
    """delta = target - current state, per frame: actions, states [..., dim]."""
    actions, states = np.asarray(actions), np.asarray(states)
    if actions.shape != states.shape:
        raise ValueError(f"actions {actions.shape} and states {states.shape} must have equal shapes")
    return actions - states


def delta_to_absolute(deltas: np.ndarray, states: np.ndarray) -> np.ndarray:
    return np.asarray(deltas) + np.asarray(states)


def temporal_delta(actions: np.ndarray) -> np.ndarray:
    """a_t - a_{t-1} along axis 0 with a_{-1} = 0, so cumsum inverts it exactly."""
    actions = np.asarray(actions)
    return np.diff(actions, axis=0, prepend=np.zeros_like(actions[:1]))


def temporal_cumsum(deltas: np.ndarray) -> np.ndarray:
    return np.cumsum(np.asarray(deltas), axis=0)


# ---- EEF specs and the unified EEF-relative form ---------------------------
@dataclasses.dataclass(frozen=True)
class EefSpec:
    """Where a dataset's state and action vectors hold the end-effector pose.

    Slices are (start, stop) index pairs. Exactly one of `state_rotation` and
    `fixed_rotation_wxyz` gives the current EEF orientation."""

    action_type: str  # "absolute_pose": action = target pose; "world_delta": action = world-frame pose change
    action_dim: int  # the dataset's action width; position, rotation and gripper must cover it exactly
    action_position: tuple[int, int] = (0, 3)
    action_rotation: tuple[int, int] | None = None  # None: the target keeps the current orientation
    action_rotation_format: str | None = None  # one of ROTATION_WIDTHS
    gripper: int | None = None  # action index of the gripper command (copied as is)
    state_position: tuple[int, int] = (0, 3)
    state_rotation: tuple[int, int] | None = None
    state_rotation_format: str | None = None
    fixed_rotation_wxyz: tuple[float, float, float, float] | None = None  # for robots whose state has no orientation
    position_scale: float = 1.0  # metres per action position unit (e.g. 0.01 for Meta-World)

    def __post_init__(self):
        if self.action_type not in ACTION_TYPES:
            raise ValueError(f"EefSpec.action_type must be one of {ACTION_TYPES}, got {self.action_type!r}")
        if (self.state_rotation is None) == (self.fixed_rotation_wxyz is None):
            raise ValueError("EefSpec: give exactly one of state_rotation and fixed_rotation_wxyz")
        for name in ("action", "state"):
            sl, fmt = getattr(self, f"{name}_rotation"), getattr(self, f"{name}_rotation_format")
            if (sl is None) != (fmt is None):
                raise ValueError(f"EefSpec.{name}_rotation and {name}_rotation_format go together")
            if fmt is not None:
                if fmt not in ROTATION_WIDTHS:
                    raise ValueError(f"EefSpec.{name}_rotation_format {fmt!r} unknown; one of {sorted(ROTATION_WIDTHS)}")
                if sl[1] - sl[0] != ROTATION_WIDTHS[fmt]:
                    raise ValueError(f"EefSpec.{name}_rotation {sl} must span {ROTATION_WIDTHS[fmt]} values for {fmt}")
            pos = getattr(self, f"{name}_position")
            if pos[1] - pos[0] != 3:
                raise ValueError(f"EefSpec.{name}_position {pos} must span 3 values")
        covered = list(range(*self.action_position))
        if self.action_rotation is not None:
            covered += list(range(*self.action_rotation))
        if self.gripper is not None:
            covered.append(self.gripper)
        if sorted(covered) != list(range(self.action_dim)):
            raise ValueError(
                f"EefSpec: action_position, action_rotation and gripper must cover indices 0..{self.action_dim - 1} "
                f"once each, got {sorted(covered)}"
            )
        if not self.position_scale > 0:
            raise ValueError(f"EefSpec.position_scale must be > 0, got {self.position_scale}")


def unified_dim(rotation: str = "axis_angle") -> int:
    if rotation not in UNIFIED_ROTATIONS:
        raise ValueError(f"unified rotation must be one of {UNIFIED_ROTATIONS}, got {rotation!r}")
    return 3 + ROTATION_WIDTHS[rotation] + 1


def current_pose(states: np.ndarray, spec: EefSpec) -> tuple[np.ndarray, np.ndarray]:
    """EEF position [..., 3] and rotation [..., 3, 3] of each state [..., state_dim]."""
    s = np.asarray(states, np.float64)
    p = s[..., slice(*spec.state_position)]
    if spec.state_rotation is not None:
        r = to_matrix(s[..., slice(*spec.state_rotation)], spec.state_rotation_format)
    else:
        r = np.broadcast_to(quat_to_matrix(np.asarray(spec.fixed_rotation_wxyz)), p.shape[:-1] + (3, 3))
    return p, r


def to_eef_relative(actions: np.ndarray, states: np.ndarray, spec: EefSpec, rotation: str = "axis_angle") -> np.ndarray:
    """Native actions [..., action_dim] with their frames' states -> unified [..., 7 | 10] (float32)."""
    a = np.asarray(actions, np.float64)
    if a.shape[-1] != spec.action_dim:
        raise ValueError(f"action width {a.shape[-1]} does not match EefSpec.action_dim {spec.action_dim}")
    unified_dim(rotation)
    p_cur, r_cur = current_pose(states, spec)
    move = a[..., slice(*spec.action_position)] * spec.position_scale
    r_act = to_matrix(a[..., slice(*spec.action_rotation)], spec.action_rotation_format) if spec.action_rotation else None
    if spec.action_type == "absolute_pose":
        p_tgt = move
        r_tgt = r_act if r_act is not None else r_cur
    else:  # world_delta: position added, rotation left-multiplied in the world frame
        p_tgt = p_cur + move
        r_tgt = r_act @ r_cur if r_act is not None else r_cur
    r_cur_t = np.swapaxes(r_cur, -1, -2)
    dp = np.einsum("...ij,...j->...i", r_cur_t, p_tgt - p_cur)
    drot = from_matrix(r_cur_t @ r_tgt, rotation)
    grip = a[..., spec.gripper : spec.gripper + 1] if spec.gripper is not None else np.zeros(a.shape[:-1] + (1,))
    return np.concatenate([dp, drot, grip], axis=-1).astype(np.float32)


def from_eef_relative(rel: np.ndarray, states: np.ndarray, spec: EefSpec, rotation: str = "axis_angle") -> np.ndarray:
    """Inverse of :func:`to_eef_relative`: unified [..., 7 | 10] -> native [..., action_dim] (float64)."""
    rel = np.asarray(rel, np.float64)
    if rel.shape[-1] != unified_dim(rotation):
        raise ValueError(f"EEF-relative width {rel.shape[-1]} does not match {unified_dim(rotation)} for {rotation}")
    p_cur, r_cur = current_pose(states, spec)
    w = ROTATION_WIDTHS[rotation]
    p_tgt = p_cur + np.einsum("...ij,...j->...i", r_cur, rel[..., :3])
    r_tgt = r_cur @ to_matrix(rel[..., 3 : 3 + w], rotation)
    out = np.zeros(rel.shape[:-1] + (spec.action_dim,))
    if spec.action_type == "absolute_pose":
        out[..., slice(*spec.action_position)] = p_tgt / spec.position_scale
        if spec.action_rotation is not None:
            out[..., slice(*spec.action_rotation)] = from_matrix(r_tgt, spec.action_rotation_format)
    else:
        out[..., slice(*spec.action_position)] = (p_tgt - p_cur) / spec.position_scale
        if spec.action_rotation is not None:
            out[..., slice(*spec.action_rotation)] = from_matrix(r_tgt @ np.swapaxes(r_cur, -1, -2), spec.action_rotation_format)
    if spec.gripper is not None:
        out[..., spec.gripper] = rel[..., -1]
    return out


_IDENTITY = {"axis_angle": (0.0, 0.0, 0.0), "euler_xyz": (0.0, 0.0, 0.0), "quat_wxyz": (1.0, 0.0, 0.0, 0.0),
             "rot6d": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)}  # "no rotation" in each format


def hold_still(last_action, representation: str = "native", spec: EefSpec | None = None,
               rotation: str = "axis_angle") -> tuple[np.ndarray, str]:
    """(the action that keeps the robot where it is after `last_action`, which rule gave it).

    What "hold still" is depends on the action representation: an EEF-relative or
    world-delta action holds with no motion and no rotation, the gripper command
    kept ("hold_still"); an absolute target holds by repeating itself ("repeat_last").
    A native action of a robot without an EefSpec is read as an absolute target
    (joint or pose), so it repeats: give the robot a spec when its actions are deltas."""
    last = np.asarray(last_action, np.float32)
    if representation == "eef_relative":
        hold = np.zeros_like(last)
        hold[3:3 + ROTATION_WIDTHS[rotation]] = _IDENTITY[rotation]
        hold[-1] = last[-1]  # the gripper command, copied as is
        return hold, "hold_still"
    if representation != "native":
        raise ValueError(f"action representation must be one of {ACTION_REPRESENTATIONS}, got {representation!r}")
    if spec is None or spec.action_type == "absolute_pose":
        return last.copy(), "repeat_last"
    hold = np.zeros_like(last)
    if spec.action_rotation is not None:
        a, b = spec.action_rotation
        hold[a:b] = _IDENTITY[spec.action_rotation_format]
    if spec.gripper is not None:
        hold[spec.gripper] = last[spec.gripper]
    return hold, "hold_still"


# The robots this package knows, by dataset name. Meta-World's 4-d action is [dx, dy, dz, grip]
# in [-1, 1]; the env moves its mocap target by 0.01 * action[:3] metres in the world frame and
# keeps the hand orientation fixed (mocap quaternion (1, 0, 1, 0)/sqrt(2): 90 degrees about y;
# measured hand rotation matrix within 0.06 of it). So it is already an EEF position delta, and
# its EEF-relative form is a fixed rotation of it: dp = R_hand^T * 0.01 * action[:3]
# = 0.01 * [-dz, dy, dx], rotation 0, gripper action[3]. Round trips recover the native action
# exactly. (syvla.sim.metaworld.EEF_SPEC is this entry.)
KNOWN_EEF_SPECS: Mapping[str, EefSpec] = {
    "metaworld": EefSpec(
        action_type="world_delta",
        action_dim=4,
        action_position=(0, 3),
        gripper=3,
        state_position=(0, 3),
        fixed_rotation_wxyz=(float(np.sqrt(0.5)), 0.0, float(np.sqrt(0.5)), 0.0),
        position_scale=0.01,
    ),
}


def known_eef_specs() -> dict[str, EefSpec]:
    """{dataset name: EefSpec} of the robots this package knows (a fresh dict); callers add their own."""
    return dict(KNOWN_EEF_SPECS)


def eef_spec(dataset: str, specs: Mapping[str, EefSpec]) -> EefSpec:
    """The spec of `dataset` in `specs` ({dataset name: EefSpec}); a dataset without one raises
    (no silent pass-through)."""
    if dataset not in specs:
        raise KeyError(f"no EefSpec registered for dataset {dataset!r}; known: {sorted(specs)}")
    return specs[dataset]


# ---- a frame table's action column in the chosen representation ----------------------
ACTION_REPRESENTATIONS = ("native", "eef_relative")  # what prepare writes into the `action` column


def to_action_representation(table: pa.Table, representation: str, rotation: str = "axis_angle",
                             specs: Mapping[str, EefSpec] | None = None) -> pa.Table:
    """Replace the robot rows' `action` [frames, action_dim] by the chosen representation (native: unchanged;
    eef_relative: [frames, unified_dim(rotation)] per the dataset's EefSpec in `specs`, default the known robots)."""
    if representation == "native":
        return table
    if representation != "eef_relative":
        raise ValueError(f"action representation must be one of {ACTION_REPRESENTATIONS}, got {representation!r}")
    robot = pc.equal(table.column(K.KIND), K.KIND_ROBOT).to_numpy(zero_copy_only=False)
    if not robot.any():
        return table
    names = set(combine(table.column(K.DATASET)).filter(pa.array(robot)).to_pylist())
    if len(names) != 1 or not robot.all():
        raise ValueError(f"eef_relative conversion takes batches of one robot dataset, got {sorted(names)} "
                         f"with {int((~robot).sum())} non-robot rows")
    spec = eef_spec(names.pop(), known_eef_specs() if specs is None else specs)
    rel = to_eef_relative(vectors(table, K.ACTION), vectors(table, K.STATE), spec, rotation)
    return table.set_column(table.schema.get_field_index(K.ACTION), table.schema.field(K.ACTION), list_column(rel))
