"""pipelines/pretrain.py -> finetune.py -> evaluate.py wired end to end on two Meta-World demos (tiny settings)."""

import json
import sys
from pathlib import Path

import pytest

from syvla.model.checkpoint import WEIGHTS_FILE, read_metadata

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def test_pretrain_finetune_evaluate(ray_local, tmp_path):
    sys.path.insert(0, str(PIPELINES))
    import evaluate
    import finetune
    import pretrain

    common = ["--demos.collect", "true", "--demos.tasks", "reach-v3", "--demos.episodes_per_task", "2", "--demos.raw", str(tmp_path / "raw"),
              "--data.path", str(tmp_path / "prepared"), "--storage_path", str(tmp_path / "runs"),
              "--max_steps", "2", "--checkpoint_every", "2", "--log_every", "1", "--global_batch_size", "4",
              "--scale.num_workers", "1", "--scale.cpus_per_worker", "0.5"]
    pre_out = tmp_path / "ckpt" / "pre"
    assert pretrain.main([*common, "--name", "pre", "--out", str(pre_out)]) == 0
    assert (pre_out / WEIGHTS_FILE).exists()
    assert read_metadata(pre_out)["train"]["stage"] == "pretrain"

    assert finetune.main([*common, "--name", "ft", "--init_from", str(pre_out), "--data.tasks", "reach-v3",
                          "--out_dir", str(tmp_path / "ckpt")]) == 0
    ft_out = tmp_path / "ckpt" / "ft-reach-v3"
    meta = read_metadata(ft_out)["train"]
    assert meta["stage"] == "finetune" and meta["init_from"] == str(pre_out.resolve()) and meta["step"] == 2

    result_file = tmp_path / "eval.json"
    assert evaluate.main(["--checkpoint", str(ft_out), "--episodes", "1", "--max_steps", "20",
                          "--heldout_episodes", "1", "--json", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    assert len(result["closed_loop"]["results"]) == 1 and result["closed_loop"]["results"][0]["seed"] == 1000
    ol = result["open_loop"]["reach-v3"]
    assert ol["frames"] > 10 and ol["baseline_mse"] > 0 and ol["policy_mse"] > 0
