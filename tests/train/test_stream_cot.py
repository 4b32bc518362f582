"""DataConfig.cot false (Table 3's 'w/o CoT') removes the plan text and nothing else."""

import pyarrow as pa

from syvla import constants as K
from syvla.train.config import DataConfig
from syvla.train.data import drop_cot_table


def test_drop_cot_keeps_every_other_column_and_row():
    table = pa.table({K.TASK: ["push the puck", "push the puck"], K.COT: ["Plan: 1. reach.", None],
                      K.FRAME_INDEX: [0, 1]})
    out = drop_cot_table(table)
    assert out.column(K.COT).to_pylist() == [None, None]
    assert out.schema == table.schema
    assert out.drop_columns([K.COT]).equals(table.drop_columns([K.COT]))
    assert DataConfig().cot is True and DataConfig(cot=False).cot is False
