"""Ray Train wrapper: TorchTrainer workers each run `syvla.train.loop.train` on their data shard.

    result = fit(cfg, {"train": ray_dataset}, norm_stats)
    policy_dir = policy_checkpoint(result)          # foundation checkpoint of the last report

Fault tolerance: FailureConfig(max_failures) restarts the worker group from the last
reported checkpoint; re-running with the same RunConfig(name, storage_path) after a
driver crash continues from that run's newest checkpoint (Ray Train V2 restores it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from syvla.model.checkpoint import is_checkpoint_dir
from syvla.normalize import NormStats
from syvla.train import loop
from syvla.train.config import TrainConfig

LOG_SUBDIR = "logs"  # metrics.jsonl, tensorboard/, loss_curves.png under storage_path/name/


def run_dir(cfg: TrainConfig) -> Path | None:
    """storage_path/name on the local filesystem; None when storage is a URI."""
    uri = cfg.storage_uri()
    return None if "://" in uri else Path(uri) / cfg.name


def log_dir(cfg: TrainConfig) -> Path:
    rd = run_dir(cfg)
    if rd is None:  # remote storage: logs stay on the rank-0 node
        import tempfile

        return Path(tempfile.gettempdir()) / "syvla-runs" / cfg.name / LOG_SUBDIR
    return rd / LOG_SUBDIR


def train_loop_per_worker(config: dict) -> None:
    """Entry point of each Ray Train worker."""
    import ray.train
    import ray.train.torch

    _quiet_report_log()
    cfg: TrainConfig = config["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    stats = NormStats.from_dict(config["norm_stats"])
    shard = ray.train.get_dataset_shard("train")
    fault = loop.FaultInjection(**config["fault"]) if config.get("fault") else None

    export = _train_metrics_exporter(cfg.name) if rank == 0 else None

    def report(metrics: dict, checkpoint_dir: Path | None) -> None:
        if export is not None:
            export(metrics)
        if checkpoint_dir is None:
            ray.train.report(metrics)
        else:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint_dir)),
                             checkpoint_dir_name=f"step_{int(metrics['step']):08d}")

    checkpoint = _resume_checkpoint(cfg, config.get("resume_from"))
    if checkpoint is None:
        loop.train(cfg, shard, stats, report=report, rank=rank, world_size=world, device=device,
                   log_dir=config["log_dir"], fault=fault)
        return
    with checkpoint.as_directory() as restore_dir:
        loop.train(cfg, shard, stats, report=report, rank=rank, world_size=world, device=device,
                   restore_dir=restore_dir, log_dir=config["log_dir"], fault=fault)


def _train_metrics_exporter(run_name: str):
    """Rank 0's reports as Prometheus gauges (ray.util.metrics; exported as ray_syvla_train_*)."""
    from ray.util.metrics import Gauge

    gauges = {key: Gauge(f"syvla_train_{key}", description=f"training {key.replace('_', ' ')} (rank 0's report)",
                         tag_keys=("run",)) for key in ("step", "loss", "action_loss", "samples_per_s")}

    def export(metrics: dict) -> None:
        for key, gauge in gauges.items():
            if isinstance(metrics.get(key), (int, float)):
                gauge.set(float(metrics[key]), tags={"run": run_name})

    return export


def _quiet_report_log() -> None:
    """Ray Train logs every report's whole metrics dict at INFO from each rank ("Reporting training result
    ..."), which floods the console next to our one line per log interval; its logger is named by file."""
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray Train layout: nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _resume_checkpoint(cfg: TrainConfig, resume_from: str | None):
    """The checkpoint to resume from: Ray Train's latest, or a newer complete one persisted under
    the run directory that the controller had not registered when the worker group died; else
    `resume_from` (a training checkpoint directory given by the user); else None."""
    import ray.train

    ray_ckpt = ray.train.get_checkpoint()
    rd = run_dir(cfg)
    scanned = loop.latest_complete_checkpoint(rd) if rd is not None else None
    if scanned is not None:
        ray_step = -1
        if ray_ckpt is not None:
            with ray_ckpt.as_directory() as d:
                ray_step = loop.checkpoint_step(d)
        if loop.checkpoint_step(scanned) > ray_step:
            return ray.train.Checkpoint(str(scanned))
    if ray_ckpt is not None:
        return ray_ckpt
    return ray.train.Checkpoint(resume_from) if resume_from else None


def make_trainer(cfg: TrainConfig, datasets: dict, norm_stats: NormStats, *,
                 fault: loop.FaultInjection | None = None, resume_from: str | None = None):
    """A TorchTrainer for `cfg`. datasets: {"train": ray.data.Dataset} (split across workers)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    if "train" not in datasets:
        raise KeyError("datasets must contain a 'train' dataset")
    if cfg.init_from and "://" not in cfg.init_from:  # workers do not run in the driver's directory
        init = Path(cfg.init_from).expanduser().resolve()
        if not is_checkpoint_dir(init):
            raise FileNotFoundError(f"init_from {init} is not a policy checkpoint directory")
        cfg = dataclasses.replace(cfg, init_from=str(init))
    s = cfg.scale
    resources = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config={
            "cfg": cfg,
            "norm_stats": norm_stats.to_dict(),
            "log_dir": str(log_dir(cfg)),
            "fault": dataclasses.asdict(fault) if fault else None,
            "resume_from": resume_from,
        },
        scaling_config=ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                               resources_per_worker=resources,
                                               placement_strategy=s.placement_strategy),
        run_config=ray.train.RunConfig(
            name=cfg.name,
            storage_path=cfg.storage_uri(),
            failure_config=ray.train.FailureConfig(max_failures=s.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
        ),
        datasets=datasets,
    )


def fit(cfg: TrainConfig, datasets: dict, norm_stats: NormStats, **kwargs):
    """Run (or resume) the training run `cfg.name`; returns the ray.train.Result."""
    return make_trainer(cfg, datasets, norm_stats, **kwargs).fit()


def policy_checkpoint(result) -> Path:
    """The foundation-format policy directory inside the result's last checkpoint (local storage)."""
    if result.checkpoint is None:
        raise RuntimeError(f"training run produced no checkpoint (error: {result.error})")
    path = Path(result.checkpoint.path) / loop.POLICY_DIR
    if not is_checkpoint_dir(path):
        raise FileNotFoundError(f"{path} is not a policy checkpoint")
    return path
