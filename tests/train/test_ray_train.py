"""Ray Train + DeepSpeed ZeRO-2 on CPU: 2 workers report checkpoints and survive a killed worker; a
re-run of a crashed driver's run resumes it (1 worker: the driver is what fails there)."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from train_helpers import norm_stats, synthetic_table, tiny_config, vqa_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HERE = Path(__file__).resolve().parent


def test_killed_worker_resumes_from_last_checkpoint(ray_local, tmp_path):
    import ray

    from syvla.model.policy import Policy
    from syvla.train import loop, ray_train
    from syvla.train.metrics import read_history

    import numpy as np
    import pyarrow as pa

    robot = synthetic_table()
    mixed = pa.concat_tables([robot, vqa_rows(20)])  # VQA rows: LM-only micro-batches happen on some ranks
    mixed = mixed.take(np.random.default_rng(0).permutation(mixed.num_rows))
    cfg = tiny_config("killed", str(tmp_path / "runs"), max_steps=5, checkpoint_every=2)
    marker = tmp_path / "killed-once"
    fault = loop.FaultInjection(step=3, marker=str(marker), rank=1)  # SIGKILL rank 1 after step 3, once
    result = ray_train.fit(cfg, {"train": ray.data.from_arrow(mixed)}, norm_stats(robot), fault=fault)

    assert result.error is None and marker.exists()
    assert result.metrics["step"] == 5 and result.metrics["resumed_from"] == 2
    ckpt = Path(result.checkpoint.path)
    assert ckpt.name == "step_00000005" and loop.is_complete(ckpt)
    shards = sorted(p.name for p in (ckpt / "deepspeed" / "state").glob("zero_pp_rank_*_optim_states.pt"))
    assert len(shards) == 2  # ZeRO-2: one optimizer partition per rank
    assert loop.TrainState.from_dict(__import__("json").loads((ckpt / "train_state" / "rank_1.json").read_text())).step == 5

    policy = Policy.load(ray_train.policy_checkpoint(result))  # the foundation checkpoint format
    sample = {"embodiment": "synthetic", "images": {v: __import__("numpy").zeros((32, 32, 3), "uint8")
                                                    for v in policy.metadata()["embodiments"]["synthetic"]["cameras"]},
              "state": [0.0] * 7, "instruction": "pick up the block", "seed": 0}
    assert policy.infer(sample)["actions"].shape == (8, 4)
    history = read_history(ray_train.log_dir(cfg) / "metrics.jsonl")
    assert [r["step"] for r in history][-1] == 5 and (ray_train.log_dir(cfg) / "loss_curves.png").exists()


DRIVER = textwrap.dedent("""
    import os, signal, sys, threading, time
    sys.path.insert(0, {here!r})
    import syvla, ray
    from pathlib import Path
    from syvla.train import loop, ray_train
    from train_helpers import norm_stats, synthetic_table, tiny_config, vqa_rows

    ray.init(address={address!r}, log_to_driver=False)
    cfg = tiny_config("crashed", {storage!r}, max_steps=6, checkpoint_every=2, workers=1)
    run = ray_train.run_dir(cfg)

    def crash_after_first_checkpoint():  # the driver dies hard, as on a lost head node or an OOM kill
        while loop.latest_complete_checkpoint(run) is None:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=crash_after_first_checkpoint, daemon=True).start()
    table = synthetic_table()
    ray_train.fit(cfg, {{"train": ray.data.from_arrow(table)}}, norm_stats(table))
""")


def test_rerun_after_driver_crash_resumes_same_run(ray_local, tmp_path):
    import ray

    from syvla.train import loop, ray_train

    storage = str(tmp_path / "runs")
    script = DRIVER.format(here=str(HERE), address=ray.get_runtime_context().gcs_address, storage=storage)
    proc = subprocess.run([sys.executable, "-c", script], cwd=str(HERE.parents[1]), timeout=400,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-3000:]
    cfg = tiny_config("crashed", storage, max_steps=6, checkpoint_every=2, workers=1)
    crashed_at = loop.checkpoint_step(loop.latest_complete_checkpoint(ray_train.run_dir(cfg)))
    assert 2 <= crashed_at < 6

    table = synthetic_table()  # the same command again: same RunConfig(name, storage_path)
    result = ray_train.fit(cfg, {"train": ray.data.from_arrow(table)}, norm_stats(table))
    assert result.error is None
    assert result.metrics["step"] == 6 and result.metrics["resumed_from"] >= crashed_at


def test_rank_zero_exports_training_metrics(ray_local, tmp_path):
    """Each report of rank 0 sets the ray_syvla_train_* gauges on the node's Prometheus endpoint."""
    import time

    import httpx
    import ray

    from syvla.train import ray_train

    cfg = tiny_config("metrics", str(tmp_path / "runs"), max_steps=2, checkpoint_every=2, workers=1)
    table = synthetic_table()
    assert ray_train.fit(cfg, {"train": ray.data.from_arrow(table)}, norm_stats(table)).error is None
    port = ray._private.worker.global_worker.node.metrics_export_port
    want = [f'ray_syvla_train_{k}{{' for k in ("step", "loss", "samples_per_s")]
    end, missing = time.monotonic() + 90, want
    while missing and time.monotonic() < end:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        missing = [w for w in want if not any(line.startswith(w) and 'run="metrics"' in line
                                               for line in text.splitlines())]
        time.sleep(2)
    assert not missing, missing
