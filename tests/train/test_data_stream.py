"""The training stream over prepared shards: task filter, multimodal share, and the missing-VQA error."""

import collections

import pytest

from syvla import constants as K
from syvla.train.config import DataConfig

from train_helpers import synthetic_table, vqa_rows, write_prepared

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_stream_mixes_vqa_at_the_ratio_and_filters_tasks(ray_local, tmp_path):
    import pyarrow as pa

    from syvla.data.prepared import load_norm_stats
    from syvla.train.data import training_dataset

    robot = synthetic_table(episodes=2, frames=10)
    other = synthetic_table(episodes=1, frames=10)
    other = other.set_column(other.schema.get_field_index(K.TASK), K.TASK,
                             pa.array(["reach the red goal position"] * 10)).cast(robot.schema)
    write_prepared(tmp_path, {"synthetic": pa.concat_tables([robot, other]), "vqa": vqa_rows(6)})
    assert "synthetic" in load_norm_stats(tmp_path).names()

    ds, sizes = training_dataset(DataConfig(path=str(tmp_path), tasks=("reach-v3",), multimodal_ratio=0.35),
                                 epoch_samples=40)
    assert sizes == {"synthetic": 10, "vqa": 6}  # only the reach rows of the robot data are left
    rows = ds.take_all()
    kinds = collections.Counter(r[K.KIND] for r in rows)
    assert kinds == {K.KIND_ROBOT: 26, K.KIND_VQA: 14}  # 35% of 40, exactly
    assert {r[K.TASK] for r in rows if r[K.KIND] == K.KIND_ROBOT} == {"reach the red goal position"}

    ds_default, _ = training_dataset(DataConfig(path=str(tmp_path), multimodal_ratio=0.0))
    assert ds_default.count() == 30  # one epoch = every robot row once


def test_positive_ratio_without_vqa_data_is_an_error(ray_local, tmp_path):
    from syvla.train.data import training_dataset

    write_prepared(tmp_path, {"synthetic": synthetic_table(episodes=1, frames=10)})
    with pytest.raises(ValueError, match="multimodal_ratio"):
        training_dataset(DataConfig(path=str(tmp_path), multimodal_ratio=0.3))
    with pytest.raises(ValueError, match="no rows after keeping tasks"):
        training_dataset(DataConfig(path=str(tmp_path), tasks=("push-v3",), multimodal_ratio=0.0))
