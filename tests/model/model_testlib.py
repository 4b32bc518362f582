"""Sample builders shared by the model tests."""

import numpy as np

from syvla import constants as K


def robot_sample(rng, cot=None, task="reach the goal", size=48):
    cams = ("corner2", "topview", "gripperPOV")
    return {"embodiment": "metaworld",
            "images": {c: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in cams},
            K.STATE: rng.normal(size=39).astype(np.float32),
            K.ACTIONS: rng.normal(0, 0.5, size=(50, 4)).astype(np.float32),
            K.ACTION_MASK: np.ones(50, bool), K.TASK: task, K.COT: cot, K.KIND: K.KIND_ROBOT}


def vqa_sample(rng, answer="red"):
    return {K.KIND: K.KIND_VQA, K.IMAGES: [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)],
            K.CONVERSATION: [{"role": "user", "content": "<image>what color is the ball?"},
                             {"role": "assistant", "content": answer}]}
