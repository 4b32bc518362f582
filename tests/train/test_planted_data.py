"""A user's data sits where the pipelines' defaults point (data/metaworld, data/prepared/metaworld):
every pipeline run with its defaults refuses, names the folder, and leaves every byte as it was.
All refusals come before Ray starts (no Ray fixture here: a pipeline that connected first would
start an instance and fail this test's time, not silently pass)."""

import hashlib
import sys
from pathlib import Path

import pytest
from train_helpers import synthetic_table, write_prepared

from syvla.data.lerobot import LeRobotWriteOptions, write_lerobot
from syvla.data.synthetic import synthetic_episode
from syvla.model.policy import make_debug_checkpoint
from syvla.sim import metaworld as mw

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def planted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw, prep = tmp_path / "data" / "metaworld", tmp_path / "data" / "prepared" / "metaworld"
    write_lerobot([synthetic_episode(i, n_frames=12, dataset="metaworld", image_size=16) for i in range(2)], raw,
                  LeRobotWriteOptions(version="v2.1", fps=10.0))  # the user's own recording, same name
    write_prepared(prep, {"metaworld": synthetic_table(episodes=2, frames=12)})
    make_debug_checkpoint(tmp_path / "checkpoints" / "pretrain" / "pretrain-debug", embodiments=(mw.EMBODIMENT,))
    sys.path.insert(0, str(PIPELINES))
    yield raw, prep, {raw: digest(raw), prep: digest(prep)}
    sys.path.remove(str(PIPELINES))


@pytest.mark.parametrize("pipeline, argv, refusal", [
    ("collect_sim", [], "data/metaworld holds data the simulator collector did not write"),
    ("collect_sim", ["--overwrite", "true"], "data/metaworld holds data the simulator collector did not write"),
    ("prepare_data", [], "output data/prepared/metaworld exists and is not empty"),
    ("prepare_data", ["--overwrite", "true", "--inputs", "metaworld=data/metaworld", "--output", "data"],
     "output data exists and is not a prepared root"),
    ("pretrain", [], "--data.path data/prepared/metaworld holds data the demo step did not prepare"),
    ("finetune", [], "--data.path data/prepared/metaworld holds data the demo step did not prepare"),
    ("pretrain", ["--data.path", "elsewhere", "--demos.collect", "true"],
     "--demos.raw data/metaworld holds data the simulator collector did not write"),
    ("pretrain", ["--demos.collect", "false", "--out", "data/prepared/metaworld"],
     "--out data/prepared/metaworld exists and is not a policy checkpoint"),
    ("finetune", ["--demos.collect", "false", "--out_dir", "data/prepared", "--name", "metaworld"],
     "--out_dir data/prepared/metaworld exists and is not a policy checkpoint"),
    ("demo", [], "data/prepared/metaworld holds data the demo step did not prepare"),
])
def test_every_pipeline_default_leaves_a_users_data_alone(planted, pipeline, argv, refusal):
    import importlib

    module = importlib.import_module(pipeline)
    with pytest.raises((SystemExit, FileExistsError)) as refused:
        module.main(argv)
    assert refusal in str(refused.value)
    raw, prep, before = planted
    assert {raw: digest(raw), prep: digest(prep)} == before
