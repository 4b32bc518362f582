"""Names shared by data, training, serving and RL: one place, no scattered literals.

Frame schema (Arrow, one row per frame), written by every reader and by the
simulator collector; see docs/architecture.md#data-contracts.
"""

# ---- Frame schema columns -------------------------------------------------
DATASET = "dataset"  # string: dataset (= embodiment) name, e.g. "metaworld"
EPISODE_ID = "episode_id"  # int64: unique within a dataset
FRAME_INDEX = "frame_index"  # int64: 0-based index within the episode
TIMESTAMP = "timestamp"  # float64: seconds since episode start
TASK = "task"  # string: natural-language instruction
COT = "cot"  # string | null: chain-of-thought / sub-task plan text
IMAGE_VIEWS = "image_views"  # list<string>: camera names, parallel to IMAGES
IMAGES = "images"  # list<binary>: encoded PNG/JPEG bytes, one per view
STATE = "state"  # list<float32>: proprioceptive state vector [state_dim]
ACTION = "action"  # list<float32>: action vector [action_dim] (dataset's own units)
SUCCESS = "success"  # bool | null: episode-level success flag when known
KIND = "kind"  # string: KIND_ROBOT or KIND_VQA
CONVERSATION = "conversation"  # string | null: JSON list of {"role", "content"} turns (VQA)

KIND_ROBOT = "robot"
KIND_VQA = "vqa"

FRAME_COLUMNS = (
    DATASET, EPISODE_ID, FRAME_INDEX, TIMESTAMP, TASK, COT,
    IMAGE_VIEWS, IMAGES, STATE, ACTION, SUCCESS, KIND, CONVERSATION,
)

# ---- Chunked training samples (one row per window start) ------------------
ACTIONS = "actions"  # list<list<float32>>: [chunk_len, action_dim], padded past episode end
ACTION_MASK = "action_mask"  # list<bool>: [chunk_len], False on padding

# ---- Normalization statistics keys ----------------------------------------
STAT_MEAN, STAT_STD, STAT_Q01, STAT_Q99, STAT_COUNT = "mean", "std", "q01", "q99", "count"
