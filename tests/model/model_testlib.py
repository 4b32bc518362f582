"""Sample builders shared by the model tests."""

import numpy as np

from syvla import constants as K
from syvla.model.sample import Sample


def robot_sample(rng, cot=None, task="reach the goal", size=48):
    cams = ("corner2", "topview", "gripperPOV")
    return Sample(embodiment="metaworld",
                  images={c: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in cams},
                  state=rng.normal(size=39).astype(np.float32),
                  actions=rng.normal(0, 0.5, size=(50, 4)).astype(np.float32),
                  action_mask=np.ones(50, bool), task=task, cot=cot, kind=K.KIND_ROBOT)


def vqa_sample(rng, answer="red"):
    return Sample(embodiment="vqa", kind=K.KIND_VQA, images={"image": rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)},
                  conversation=[{"role": "user", "content": "<image>what color is the ball?"},
                                {"role": "assistant", "content": answer}])
