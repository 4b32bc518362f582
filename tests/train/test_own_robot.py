"""A robot the model has never seen, from a LeRobot dataset to a fine-tuned policy served next to Meta-World.

docs/own_robot.md runs here as written: its bash commands (prepare_data.py, finetune.py --config
my_robot.yaml, evaluate.py --heldout_data, serve.py), its my_robot.yaml and its client snippet.
The run adds myrobot's encoder/decoder, keeps every other weight, serves both robots, and never
writes into the prepared folder. The same folder survives every pipeline's defaults that could touch it.
"""

import hashlib
import importlib
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from syvla import constants as K
from syvla.data.columns import list_column
from syvla.data.lerobot import LeRobotWriteOptions, write_lerobot
from syvla.data.synthetic import synthetic_episode
from syvla.model.checkpoint import read_config
from syvla.model.policy import make_debug_checkpoint
from syvla.sim import metaworld as mw

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:You should not use the .timeout. argument")]
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
DOC = Path(__file__).resolve().parents[2] / "docs" / "own_robot.md"
CAMERAS = ("front", "top", "wrist")
STATE_DIM, ACTION_DIM = 5, 7
TASK = "stack the red cup on the blue one"


def robot_episode(i: int) -> pa.Table:
    """A 5-d state, 7-d action, three-camera robot with a task string of its own."""
    t = synthetic_episode(i, n_frames=24, dataset="myrobot", image_size=32, views=CAMERAS, task=TASK)
    rng = np.random.default_rng(i)
    state = np.asarray(t.column(K.STATE).to_pylist(), np.float32)[:, :STATE_DIM]
    action = np.concatenate([np.asarray(t.column(K.ACTION).to_pylist(), np.float32),
                             rng.normal(0, 0.1, (t.num_rows, ACTION_DIM - 4)).astype(np.float32)], axis=1)
    t = t.set_column(t.schema.get_field_index(K.STATE), t.schema.field(K.STATE), list_column(state))
    return t.set_column(t.schema.get_field_index(K.ACTION), t.schema.field(K.ACTION), list_column(action))


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def pipelines():
    sys.path.insert(0, str(PIPELINES))
    return lambda name: importlib.import_module(name)


def test_the_own_robot_doc_runs_as_written(ray_local, tmp_path, monkeypatch, pipelines):
    import socket

    monkeypatch.chdir(tmp_path)  # the doc's relative paths (data/, checkpoints/, runs/) land here
    raw, held = tmp_path / "myrobot_lerobot", tmp_path / "myrobot_heldout_lerobot"
    options = LeRobotWriteOptions(version="v2.1", fps=10.0)
    write_lerobot([robot_episode(i) for i in range(4)], raw, options)
    write_lerobot([robot_episode(i) for i in range(10, 12)], held, options)
    make_debug_checkpoint(tmp_path / "checkpoints" / "pretrain" / "pretrain-debug", embodiments=(mw.EMBODIMENT,))
    (yaml_text,) = doc_blocks("yaml")
    (tmp_path / "my_robot.yaml").write_text(yaml_text)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fast = {"finetune": ["--max_steps", "2", "--checkpoint_every", "2", "--log_every", "1", "--global_batch_size", "4",
                         "--scale.num_workers", "1", "--scale.cpus_per_worker", "0.5"],  # flags win over the file
            "serve": ["--port", str(port), "--blocking", "false"]}
    prep = tmp_path / "data" / "prepared" / "myrobot"
    (commands,) = doc_blocks("bash")
    ran, before = [], None
    try:
        for line in commands.strip().splitlines():
            argv = shlex.split(line.replace("/data/myrobot_heldout", str(held)).replace("/data/myrobot", str(raw)))
            assert argv[0] == "python" and argv[1].startswith("pipelines/"), line
            name = Path(argv[1]).stem
            assert pipelines(name).main(argv[2:] + fast.get(name, [])) == 0, line
            ran.append(name)
            if name == "prepare_data" and before is None:
                before = tree_digest(prep)
        assert ran == ["prepare_data", "prepare_data", "finetune", "evaluate", "serve"]

        out = tmp_path / "checkpoints" / "finetune" / "myrobot"
        cfg = read_config(out)
        assert [(e.name, e.state_dim, e.action_dim, e.cameras, e.vlm_camera) for e in cfg.embodiments] == [
            ("metaworld", 39, 4, mw.CAMERAS, ""), ("myrobot", STATE_DIM, ACTION_DIM, CAMERAS, "top")]
        assert cfg.decoupling.tau == 0.1
        assert tree_digest(prep) == before, "fine-tuning wrote into the user's prepared folder"

        # The doc's client snippet against the served policy; then Meta-World on the same endpoint.
        (snippet,) = doc_blocks("python")
        exec(compile(snippet.replace("127.0.0.1:8000", f"127.0.0.1:{port}"), str(DOC), "exec"), {})
        from syvla.client import PolicyClient

        with PolicyClient(f"http://127.0.0.1:{port}") as client:
            assert client.metadata()["embodiments"]["metaworld"]["action_dim"] == 4
            client.start_episode(instruction=TASK, embodiment="metaworld")
            rng = np.random.default_rng(0)
            images = {c: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for c in mw.CAMERAS}
            got = client.act(images, rng.standard_normal(39).astype(np.float32), TASK, embodiment="metaworld", seed=1)
            assert got.actions.shape == (50, 4) and np.isfinite(got.actions).all()
    finally:
        from ray import serve

        serve.shutdown()

    # The resolved config is saved with the run and with the checkpoint, and `--config` of it
    # rebuilds the same TrainConfig (the checkpoint's fields given back equal are accepted).
    from syvla.cli import from_dict, parse_configs
    from syvla.model.checkpoint import read_metadata
    from syvla.train.config import PRESETS, TrainConfig
    from syvla.train.embodiments import resolve_model

    given = {}
    again = parse_configs(["--config", str(tmp_path / "runs" / "myrobot" / "config.yaml")], "", presets=PRESETS,
                          preset="finetune-debug", given=given)
    assert again.model == cfg and again.name == "myrobot" and again.max_steps == 2
    assert again.init_from == str(tmp_path / "checkpoints" / "pretrain" / "pretrain-debug")  # absolute: means the same anywhere
    assert from_dict(TrainConfig, read_metadata(out)["train"]["config"]) == again
    model_flags = {k[len("model."):]: v for k, v in given.items() if k.startswith("model.")}
    assert resolve_model(again, model_flags).model == cfg

    # A field the checkpoint fixes is refused by name before Ray Train starts.
    run = ["--data.path", str(prep), *fast["finetune"]]
    with pytest.raises(SystemExit, match=r"--model\.expert\.width cannot be set"):
        pipelines("finetune").main(["--config", "my_robot.yaml", "--model.expert.width", "96", *run])
    # Defaults that could write: demo collection is off when --data.path is given, and asking
    # for it into a folder the demo step did not prepare is refused.
    assert pipelines("pretrain").main(["--name", "pre-own", "--out", str(tmp_path / "pre_own"), *run]) == 0
    with pytest.raises(SystemExit, match="holds data the demo step did not prepare"):
        pipelines("pretrain").main(["--demos.collect", "true", "--demos.raw", str(tmp_path / "mw"), *run])
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        pipelines("prepare_data").main(["--inputs", f"myrobot={raw}", "--output", str(prep)])
    with pytest.raises(SystemExit, match="is not a policy checkpoint: refusing to replace it"):
        pipelines("pretrain").main(["--name", "pre-own2", "--out", str(prep), *run])
    assert tree_digest(prep) == before
