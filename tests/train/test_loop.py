"""The training loop's plain parts: data position, checkpoint discovery, metrics, task filter (no Ray)."""

import json

import pyarrow as pa

from syvla import constants as K
from syvla.model.checkpoint import REQUIRED_FILES
from syvla.sim.metaworld import task_texts
from syvla.train import loop
from syvla.train.data import filter_tasks_table
from syvla.train.metrics import MetricsLogger, read_history

from train_helpers import synthetic_table


class ListSource:
    """iter_batches over fixed rows: one call = one epoch, batches in order."""

    def __init__(self, table: pa.Table):
        self.table = table
        self.epochs = 0

    def iter_batches(self, *, batch_size, batch_format, drop_last, prefetch_batches):
        assert batch_format == "pyarrow" and drop_last
        self.epochs += 1
        for i in range(0, self.table.num_rows - batch_size + 1, batch_size):
            yield self.table.slice(i, batch_size)


def ids(samples):
    return [float(s["state"][0]) for s in samples]


def test_data_position_survives_a_restart_across_epochs():
    table = synthetic_table(episodes=1, frames=10)  # 10 rows: 3 batches of 3 per epoch
    state = loop.TrainState()
    stream = loop.sample_batches(ListSource(table), 3, state, to_sample=lambda r: {"state": r[K.STATE]})
    first = [ids(next(stream)[0]) for _ in range(5)]  # epoch 0: 3 batches, epoch 1: 2 batches
    assert (state.epoch, state.batches_in_epoch) == (1, 2)
    saved = loop.TrainState.from_dict(json.loads(json.dumps(state.to_dict())))
    expected_next = ids(next(stream)[0])

    resumed = loop.sample_batches(ListSource(table), 3, saved, to_sample=lambda r: {"state": r[K.STATE]})
    assert ids(next(resumed)[0]) == expected_next  # the 6th batch again, without re-reading the first five
    assert first[3] == first[0] and (saved.epoch, saved.batches_in_epoch) == (1, 3)


def test_empty_shard_is_an_error():
    import pytest

    stream = loop.sample_batches(ListSource(synthetic_table(episodes=1, frames=10)), 16, loop.TrainState())
    with pytest.raises(RuntimeError, match="no batch of 16"):
        next(stream)


def fake_checkpoint(root, step, world=2, complete=True):
    d = root / f"step_{step:08d}"
    (d / loop.TRAIN_STATE_DIR).mkdir(parents=True)
    (d / loop.POLICY_DIR).mkdir()
    for name in REQUIRED_FILES:  # an (empty) policy checkpoint directory
        (d / loop.POLICY_DIR / name).write_text("0\n")
    ds = d / loop.DEEPSPEED_DIR / loop.DEEPSPEED_TAG
    ds.mkdir(parents=True)
    (ds / "mp_rank_00_model_states.pt").write_bytes(b"")
    for r in range(world if complete else world - 1):
        (ds / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt").write_bytes(b"")
        (d / loop.TRAIN_STATE_DIR / f"rank_{r}.json").write_text(json.dumps(
            {**loop.TrainState(step=step).to_dict(), "world_size": world}))
    return d


def test_latest_complete_checkpoint_skips_partial_ones(tmp_path):
    assert loop.latest_complete_checkpoint(tmp_path / "missing") is None
    fake_checkpoint(tmp_path, 2)
    newest = fake_checkpoint(tmp_path, 4)
    fake_checkpoint(tmp_path, 6, complete=False)  # rank 1 never finished uploading
    assert loop.latest_complete_checkpoint(tmp_path) == newest
    assert loop.checkpoint_step(newest) == 4


def test_metrics_logger_writes_history_tensorboard_and_png(tmp_path, capsys):
    log = MetricsLogger(tmp_path, total_steps=4)
    for step in (1, 2, 2, 3):  # step 2 logged twice (a restart): the later entry wins
        log.log(step, {"loss": 1.0 / step, "action_loss": 1.0 / step, "lm_loss": 0.1, "masked_fraction": 0.05,
                       "samples_per_s": 10.0 * step, "data_wait_share": 0.1, "lr": 1e-4})
    png = log.close()
    assert png.exists() and png.stat().st_size > 1000
    assert [r["step"] for r in read_history(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    assert "step 3/4 | loss 0.3333" in capsys.readouterr().out
    MetricsLogger(tmp_path / "other", active=False).log(1, {"loss": 1.0})  # non-zero ranks write nothing
    assert not (tmp_path / "other").exists()


def test_task_filter_keeps_named_tasks_and_vqa():
    from syvla.data.synthetic import synthetic_vqa

    robot = synthetic_table(episodes=1, frames=3)
    other = robot.set_column(robot.schema.get_field_index(K.TASK), K.TASK, pa.array(["reach the red goal position"] * 3))
    vqa = synthetic_vqa(0)
    vqa = vqa.append_column(K.ACTIONS, pa.array([[]], robot.schema.field(K.ACTIONS).type)).append_column(
        K.ACTION_MASK, pa.array([[]], robot.schema.field(K.ACTION_MASK).type))
    table = pa.concat_tables([robot, other.cast(robot.schema), vqa.cast(robot.schema)])
    kept = filter_tasks_table(table, task_texts(["reach-v3"]))
    assert kept.column(K.TASK).to_pylist() == ["reach the red goal position"] * 3 + ["Describe the image."]
    assert task_texts(["pick up the block"]) == ["pick up the block"]


def test_vqa_samples_get_image_placeholders_once():
    import numpy as np

    from syvla.model.processing import with_image_placeholders
    from syvla.model.sample import Sample

    image = np.zeros((4, 4, 3), np.uint8)
    sample = Sample(embodiment="vqa", kind=K.KIND_VQA, images={"image": image},
                    conversation=[{"role": "user", "content": "What is it?"}, {"role": "assistant", "content": "A cup."}])
    fixed = with_image_placeholders(sample)
    assert fixed.conversation[0]["content"] == "<image>\nWhat is it?"
    assert sample.conversation[0]["content"] == "What is it?"  # the input is not modified
    assert with_image_placeholders(fixed) == fixed  # placeholders present: unchanged
    robot = Sample(embodiment="metaworld", kind=K.KIND_ROBOT, images={"a": image}, conversation=None)
    assert with_image_placeholders(robot) is robot
