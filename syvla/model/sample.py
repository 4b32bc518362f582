"""The model sample and the robot observation: typed inputs of the batch builder.

`Sample` is what `syvla.model.processing.build_batch` turns into tensors;
training (prepared rows, `syvla.data.chunking.row_to_sample`), serving
(`Observation.to_sample`), RL rollouts and retrieved expert frames all build
one, so the structural checks live in its `__post_init__` and nowhere else.
Checks that need the model (embodiment known, its cameras, state/action dims,
normalization statistics) stay in the batch builder and in `Policy.validate`.

No torch here: the data layer builds samples without loading the model stack.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from syvla import constants as K

KINDS = (K.KIND_ROBOT, K.KIND_VQA)


class ObservationError(ValueError):
    """An observation is malformed; the message names the field ("images.corner2: ...")."""


def _array(value: Any, dtype, ndim: int, field: str) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim != ndim:
        raise ValueError(f"sample field {field!r}: expected a {ndim}-D array, got shape {list(arr.shape)}")
    return arr


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: numpy fields have no truth value; identity instead
class Sample:
    """One robot frame (with its action chunk when training) or one VQA conversation.

    VQA samples have an empty state [0]; rows read from prepared data also carry
    empty actions [0, 0] and mask [0]. Inference samples have actions None.
    """

    embodiment: str  # dataset (= embodiment) name; robot samples: registered in the model config
    images: dict[str, np.ndarray]  # {view: uint8 [H, W, 3]}; robot: every camera of the embodiment,
    #                                 VQA: one per <image> placeholder, in conversation order
    state: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))  # float32 [state_dim], raw units
    task: str = ""  # instruction text (robot); the batch builder truncates it to max_prompt_tokens
    actions: np.ndarray | None = None  # float32 [chunk, action_dim], raw units; training only
    action_mask: np.ndarray | None = None  # bool [chunk]: chunk steps the loss scores (False past an episode end)
    cot: str | None = None  # chain of thought / sub-task plan (Think-Before-Act, §3.1)
    kind: str = K.KIND_ROBOT  # K.KIND_ROBOT or K.KIND_VQA
    conversation: list[dict] | None = None  # VQA: [{"role": user|assistant|system, "content": str}]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"sample field 'kind' must be {K.KIND_ROBOT!r} or {K.KIND_VQA!r}, got {self.kind!r}")
        if not isinstance(self.embodiment, str):
            raise ValueError(f"sample field 'embodiment' must be a string, got {type(self.embodiment).__name__}")
        if not isinstance(self.images, Mapping):
            raise ValueError("sample field 'images' must map view name -> uint8 [H, W, 3]")
        images = {view: np.asarray(image) for view, image in self.images.items()}
        for view, arr in images.items():
            if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
                raise ValueError(f"sample field 'images', view {view!r}: expected uint8 [H, W, 3], got {arr.dtype} {list(arr.shape)}")
        set_ = (lambda name, value: object.__setattr__(self, name, value))  # frozen: normalize once, here
        set_("images", images)
        set_("state", _array(self.state, np.float32, 1, "state"))
        if self.actions is not None:
            set_("actions", _array(self.actions, np.float32, 2, "actions"))
        if self.action_mask is not None:
            set_("action_mask", _array(self.action_mask, bool, 1, "action_mask"))
            if self.actions is not None and self.action_mask.shape != self.actions.shape[:1]:
                raise ValueError(f"sample fields 'actions' {list(self.actions.shape)} and 'action_mask' "
                                 f"{list(self.action_mask.shape)} disagree on the chunk length")
        if self.conversation is not None and not (
                isinstance(self.conversation, list)
                and all(isinstance(t, dict) and {"role", "content"} <= t.keys() for t in self.conversation)):
            raise ValueError("sample field 'conversation' must be a list of {'role', 'content'} turns")


@dataclasses.dataclass(frozen=True, eq=False)
class Observation:
    """What a robot sends at inference (`POST /v1/act`, `Policy.infer`): one frame, no actions."""

    embodiment: str  # the robot's embodiment name, registered in the model config
    images: dict[str, np.ndarray]  # {camera: uint8 [H, W, 3]}, any size (the batch builder resizes)
    state: np.ndarray  # float32 [state_dim], the robot's own units
    instruction: str  # the task, natural language
    cot: str | None = None  # a given chain of thought (instead of generating one)
    think: bool = False  # Think-Before-Act: generate a bounded chain of thought first
    seed: int | None = None  # seeds the flow noise (the same seed gives the same chunk)
    # Real-time chunking: the actions of its current chunk the robot will still execute (robot units,
    # float32 [n, action_dim]) and how many of them run before the new chunk arrives (the delay d <= n).
    # The new chunk is inpainted to agree with them; its first d steps are the ones already executed.
    prefix_actions: np.ndarray | None = None
    prefix_delay: int = 0

    @classmethod
    def from_dict(cls, obs: Any) -> "Observation":
        """A wire-shaped dict {"embodiment", "images", "state", "instruction", "think"?, "seed"?, "cot"?}
        -> Observation. Raises ObservationError naming the field; checks against the model (known
        embodiment, its cameras, state dim, pixel format) are `Policy.validate`'s."""
        if isinstance(obs, Observation):
            return obs
        if not isinstance(obs, Mapping):
            raise ObservationError("observation must be an object")
        images = obs.get("images")
        if not isinstance(images, Mapping):
            raise ObservationError("images: must map camera name -> uint8 [H, W, 3]")
        try:
            state = np.asarray(obs.get("state", []), dtype=np.float32)
        except (TypeError, ValueError):
            raise ObservationError("state: must be a list of numbers") from None
        if not np.all(np.isfinite(state)):
            raise ObservationError("state: contains NaN or inf")
        instruction = obs.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ObservationError("instruction: must be a non-empty string")
        cot = obs.get("cot")
        if cot is not None and not isinstance(cot, str):
            raise ObservationError("cot: must be a string or null")
        seed = obs.get("seed")
        try:
            seed = None if seed is None else int(seed)
        except (TypeError, ValueError):
            raise ObservationError("seed: must be an integer or null") from None
        prefix, delay = obs.get("prefix_actions"), obs.get("prefix_delay", 0)
        if prefix is not None:
            try:
                prefix = np.asarray(prefix, dtype=np.float32)
            except (TypeError, ValueError):
                raise ObservationError("prefix_actions: must be a list of action rows") from None
            if prefix.ndim != 2 or not len(prefix):
                raise ObservationError(f"prefix_actions: expected [n >= 1, action_dim], got shape {list(prefix.shape)}")
            if not np.all(np.isfinite(prefix)):
                raise ObservationError("prefix_actions: contains NaN or inf")
        if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)):
            raise ObservationError("prefix_delay: must be an integer")
        n = 0 if prefix is None else len(prefix)
        if not 0 <= int(delay) <= n:
            raise ObservationError(f"prefix_delay: must be in 0..{n} (the prefix_actions given), got {delay}")
        return cls(embodiment=obs.get("embodiment"), images=dict(images), state=state, instruction=instruction,
                   cot=cot, think=bool(obs.get("think", False)), seed=seed, prefix_actions=prefix,
                   prefix_delay=int(delay))

    def to_sample(self) -> Sample:
        """The robot sample the batch builder takes (no actions: inference)."""
        return Sample(embodiment=self.embodiment, images=self.images, state=self.state, task=self.instruction,
                      cot=self.cot, kind=K.KIND_ROBOT)
