"""Run-state files: the small JSON documents a run rewrites as it goes and a restart reads back.

    write_json(run_dir / STATE_FILE, state_dict)     # atomic: a crash leaves the old file or the new one
    state = read_json(run_dir / STATE_FILE)           # a missing or torn file raises, naming it

Owners name their files next to the dataclass they hold (syvla.rl.controller `RunState` and
its `state.json`, syvla.rl.metrics `metrics.json`, pipelines/demo.py `summary.json`) and
read and write them only through these two functions. numpy scalars and arrays are
written as JSON numbers and lists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as JSON to `path` atomically: a temp file beside it, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=1, default=to_json))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to `path` atomically (temp file beside it, then rename): optimizer states and the like."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run-state file not found: {path}")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def to_json(x):
    """json.dumps `default`: numpy scalars and arrays as plain JSON values."""
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")
