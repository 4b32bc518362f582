"""The per-worker training loop: model, DeepSpeed ZeRO-2 engine, data stream, step, checkpoints, metrics.

Plain functions; Ray appears only in `ray_train.py`, which hands `train()` the
worker's data shard, rank and a `report` callback. Without Ray, `train()` runs in
one process (world size 1) or under any launcher that sets up torch.distributed.

Training checkpoint directory (one per report; every rank writes its own files
into it, Ray Train merges them):
    policy/              the foundation checkpoint format (syvla.model.checkpoint): Policy.load() reads it
    deepspeed/state/     DeepSpeed engine state: module, ZeRO-2 optimizer shards (one per rank)
    train_state/rank_<r>.json   step, samples seen, data position (epoch, micro-batches into it)
The learning rate is a pure function of the step (schedule.py), so it needs no state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch

from syvla.data.chunking import loss_mask
from syvla.model.sample import Sample
from syvla.normalize import NormStats
from syvla.train import schedule
from syvla.train.config import TrainConfig
from syvla.train.metrics import MetricsLogger, Window, write_line

POLICY_DIR = "policy"
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
TRAIN_STATE_DIR = "train_state"

ReportFn = Callable[[dict, "Path | None"], None]  # (metrics, checkpoint dir or None)


class BatchSource(Protocol):
    """What the loop reads: a Ray DataIterator (a Train worker's shard) or anything with the same method.

    Each call to iter_batches is one epoch over the source.
    """

    def iter_batches(self, *, batch_size: int, batch_format: str, drop_last: bool, prefetch_batches: int) -> Iterator: ...


@dataclasses.dataclass
class TrainState:
    """Everything besides the DeepSpeed state that a resumed worker needs."""

    step: int = 0  # optimizer steps done
    samples_seen: int = 0  # samples this worker consumed
    epoch: int = 0  # passes over this worker's shard started before the current one
    batches_in_epoch: int = 0  # micro-batches of the current epoch already consumed (resume skips them)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(**{f.name: int(d[f.name]) for f in dataclasses.fields(cls)})


# ---- model and engine ------------------------------------------------------------------------
def build_model(cfg: TrainConfig, data_stats: NormStats):
    """(model in train mode, NormStats the checkpoints will carry).

    From `cfg.init_from` (fine-tuning): `cfg.model` as the driver derived it from the checkpoint
    (syvla.train.embodiments.resolve_model: new embodiments added, allowed fields set), with every
    checkpoint weight loaded and the new embodiments' encoder/decoders seeded with `cfg.seed`; the
    checkpoint's statistics, plus the data's for datasets it has none for. Otherwise a fresh model
    from `cfg.model`, seeded with `cfg.seed` (DeepSpeed broadcasts rank 0's weights).
    """
    from syvla.model.checkpoint import load_checkpoint
    from syvla.model.syvla import SyVLA

    torch.manual_seed(cfg.seed)
    if cfg.init_from:
        model, ckpt_stats, _ = load_checkpoint(cfg.init_from, config=cfg.model)
        stats = data_stats.merged(ckpt_stats)  # the checkpoint's statistics win: its encoders were trained on them
    else:
        model, stats = SyVLA(cfg.model), data_stats
    for e in model.cfg.embodiments:
        stats[e.name]  # raises naming the embodiment whose statistics are missing
    return model.train(), stats


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    if cfg.precision == "auto":
        return device.type == "cuda"
    return cfg.precision == "bf16"


def _skip_cpu_shm_build(device: torch.device) -> None:
    """On CPU, DeepSpeed JIT-compiles its shared-memory allreduce op at the first initialize
    (70-115 s); gloo works without it."""
    if device.type != "cpu":
        return
    import deepspeed.comm.torch  # noqa: F401

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms, embeddings and other 1-D tensors."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def deepspeed_config(cfg: TrainConfig, bf16: bool) -> dict:
    return {
        "train_batch_size": cfg.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "gradient_clipping": cfg.optim.clip_grad_norm,
        "zero_optimization": {"stage": cfg.zero_stage, "contiguous_gradients": True, "overlap_comm": False},
        "zero_allow_untested_optimizer": True,  # a torch AdamW object: no FusedAdam build
        "bf16": {"enabled": bf16},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def make_engine(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    """DeepSpeed engine (ZeRO stage cfg.zero_stage) around `model` with a torch AdamW (Table 7 settings)."""
    _ensure_process_group_env()
    _skip_cpu_shm_build(device)
    import deepspeed

    o = cfg.optim
    lr0 = schedule.cosine_with_warmup(0, peak_lr=o.peak_lr, decay_lr=o.decay_lr, warmup_steps=o.warmup_steps,
                                      total_steps=cfg.max_steps)
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=lr0, betas=o.betas, eps=o.eps)
    engine, *_ = deepspeed.initialize(model=model.to(device), optimizer=optimizer,
                                      config=deepspeed_config(cfg, use_bf16(cfg, device)))
    return engine


def _ensure_process_group_env() -> None:
    """Single-process runs without a launcher: a world of one on localhost."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


# ---- data ------------------------------------------------------------------------------------
def default_to_sample(row: dict) -> Sample:
    """A stream row -> a `syvla.model.sample.Sample`; the data package owns the row format."""
    from syvla.data.chunking import row_to_sample

    return row_to_sample(row)


def sample_batches(source: BatchSource, batch_size: int, state: TrainState, prefetch_batches: int = 2,
                   to_sample: Callable[[dict], Sample] = default_to_sample) -> Iterator[tuple[list[Sample], float]]:
    """Yield (samples, seconds waited for them) forever, epoch after epoch, keeping `state`'s data position.

    On resume the first epoch skips the `state.batches_in_epoch` micro-batches the checkpoint
    had consumed (without decoding them). The position is exact when the source yields the same
    order again for the same epoch (a seeded stream); otherwise it restores how far into the
    epoch the worker was.
    """
    skip = state.batches_in_epoch
    while True:
        consumed = 0
        t0 = time.perf_counter()
        for table in source.iter_batches(batch_size=batch_size, batch_format="pyarrow", drop_last=True,
                                         prefetch_batches=prefetch_batches):
            consumed += 1
            if skip:
                skip -= 1
                continue
            samples = [to_sample(row) for row in table.to_pylist()]
            wait = time.perf_counter() - t0
            state.batches_in_epoch = consumed
            yield samples, wait
            t0 = time.perf_counter()
        if consumed == 0:
            raise RuntimeError(f"the data shard yielded no batch of {batch_size} samples: too little data "
                               "for this batch size and number of workers")
        state.epoch += 1
        state.batches_in_epoch = 0
        skip = 0


def _cast_floats(batch, dtype: torch.dtype):
    def cast(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.to(dtype)
        if isinstance(x, dict):
            return {k: cast(v) for k, v in x.items()}
        return x

    return type(batch)(**{f.name: cast(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


# ---- checkpoints -----------------------------------------------------------------------------
def save_training_checkpoint(directory: str | Path, engine, norm_stats: NormStats, state: TrainState,
                             cfg: TrainConfig, rank: int) -> Path:
    """Write this rank's part of a training checkpoint (collective: every rank calls it)."""
    from syvla.cli import to_dict
    from syvla.model.checkpoint import save_checkpoint

    directory = Path(directory)
    engine.save_checkpoint(str(directory / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
    if rank == 0:
        extra = {"train": {"run": cfg.name, "stage": cfg.stage, "step": state.step, "init_from": cfg.init_from,
                           "config": to_dict(cfg)}}  # the full TrainConfig: `--config` of it reruns the run
        # policy_version counts RL updates; imitation-training checkpoints are version 0.
        save_checkpoint(directory / POLICY_DIR, engine.module, norm_stats, policy_version=0, extra=extra)
    # Written last: a rank's state file marks its part of the checkpoint complete.
    (directory / TRAIN_STATE_DIR).mkdir(parents=True, exist_ok=True)
    (directory / TRAIN_STATE_DIR / f"rank_{rank}.json").write_text(
        json.dumps({**state.to_dict(), "world_size": world_size(engine)}))
    return directory


def world_size(engine) -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_complete(directory: str | Path) -> bool:
    """Every rank's state file, its ZeRO shard, the DeepSpeed module state and the policy are present."""
    from syvla.model.checkpoint import is_checkpoint_dir

    d = Path(directory)
    try:
        info = json.loads((d / TRAIN_STATE_DIR / "rank_0.json").read_text())
    except (OSError, ValueError):
        return False
    ranks = range(int(info.get("world_size", 1)))
    ds = d / DEEPSPEED_DIR / DEEPSPEED_TAG
    return (all((d / TRAIN_STATE_DIR / f"rank_{r}.json").exists() for r in ranks)
            and (ds / "mp_rank_00_model_states.pt").exists()
            and all(any(ds.glob(f"*zero_pp_rank_{r}_*optim_states.pt")) for r in ranks)
            and is_checkpoint_dir(d / POLICY_DIR))


def latest_complete_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest complete training checkpoint (`step_*`) under a run directory, or None.

    Ray Train registers a reported checkpoint when its controller next polls the workers
    (every ~2 s); a worker killed in between leaves a persisted but unregistered checkpoint.
    Resuming picks the newer of Ray's checkpoint and this one.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    best, best_step = None, -1
    for d in run_dir.glob("step_*"):
        if d.is_dir() and is_complete(d):
            step = checkpoint_step(d)
            if step > best_step:
                best, best_step = d, step
    return best


def load_training_checkpoint(directory: str | Path, engine, rank: int) -> TrainState:
    """Restore the engine (weights, optimizer shards) and this rank's TrainState."""
    directory = Path(directory)
    path, _ = engine.load_checkpoint(str(directory / DEEPSPEED_DIR), tag=DEEPSPEED_TAG,
                                     load_optimizer_states=True, load_lr_scheduler_states=False)
    if path is None:
        raise FileNotFoundError(f"no DeepSpeed state under {directory / DEEPSPEED_DIR}")
    state_file = directory / TRAIN_STATE_DIR / f"rank_{rank}.json"
    if not state_file.exists():  # a different world size: take rank 0's step, restart the epoch
        ref = TrainState.from_dict(json.loads((directory / TRAIN_STATE_DIR / "rank_0.json").read_text()))
        return TrainState(step=ref.step, samples_seen=ref.samples_seen, epoch=ref.epoch, batches_in_epoch=0)
    return TrainState.from_dict(json.loads(state_file.read_text()))


def checkpoint_step(directory: str | Path) -> int:
    """The optimizer step a training checkpoint was written at."""
    return TrainState.from_dict(json.loads((Path(directory) / TRAIN_STATE_DIR / "rank_0.json").read_text())).step


# ---- the loop --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FaultInjection:
    """Test hook: rank `rank` kills its own process (SIGKILL) right after optimizer step `step`,
    once: `marker` is created first and a present marker disables the kill."""

    step: int
    marker: str
    rank: int = 0

    def maybe_kill(self, step: int, rank: int) -> None:
        if step == self.step and rank == self.rank and not os.path.exists(self.marker):
            Path(self.marker).write_text(f"killed at step {step}\n")
            os.kill(os.getpid(), signal.SIGKILL)


def train(cfg: TrainConfig, source: BatchSource, data_stats: NormStats, *, report: ReportFn,
          rank: int = 0, world_size: int = 1, device: torch.device | None = None,
          restore_dir: str | Path | None = None, log_dir: str | Path | None = None,
          to_sample: Callable[[dict], Sample] = default_to_sample,
          fault: FaultInjection | None = None) -> TrainState:
    """Train to `cfg.max_steps` optimizer steps; return the final TrainState.

    `report(metrics, checkpoint_dir)` is called by every rank at the same steps: every
    `log_every` steps with checkpoint_dir None, every `checkpoint_every` steps and at the end
    with a directory holding this rank's part of the checkpoint (deleted after the call).
    """
    from syvla.model.processing import build_batch

    device = device or torch.device("cpu")
    model, norm_stats = build_model(cfg, data_stats)
    engine = make_engine(model, cfg, device)
    bf16 = use_bf16(cfg, device)
    state = load_training_checkpoint(restore_dir, engine, rank) if restore_dir else TrainState()
    resumed_from = state.step
    if restore_dir and rank == 0:
        write_line(f"[syvla.train] resumed {cfg.name} at step {state.step} "
                   f"(epoch {state.epoch}, micro-batch {state.batches_in_epoch})")
    logger = MetricsLogger(log_dir, active=rank == 0, total_steps=cfg.max_steps)
    o = cfg.optim
    micro = cfg.micro_batch_size
    batches = sample_batches(source, micro, state, cfg.data.prefetch_batches, to_sample)
    processor, mcfg = engine.module.processor, engine.module.cfg
    gen = torch.Generator()
    window = Window()
    engine.train()
    while state.step < cfg.max_steps:
        lr = schedule.cosine_with_warmup(state.step, peak_lr=o.peak_lr, decay_lr=o.decay_lr,
                                         warmup_steps=o.warmup_steps, total_steps=cfg.max_steps)
        schedule.set_lr(engine.optimizer, lr)
        # Flow noise and times are a function of (seed, step, rank): a resumed run draws the same.
        gen.manual_seed((cfg.seed * 1_000_003 + state.step) * 4099 + rank)
        sums = {"loss": 0.0, "action_loss": 0.0, "lm_loss": 0.0, "masked_fraction": 0.0}
        wait = 0.0
        for _ in range(cfg.grad_accum_steps):
            samples, waited = next(batches)
            wait += waited
            batch = build_batch(samples, processor, mcfg, norm_stats, training=True).to(device)
            if batch.action_mask is not None:  # the one rule, shared with RL's expert frames
                batch = dataclasses.replace(batch, action_mask=loss_mask(batch.action_mask, cfg.train_on_padding))
            if bf16:
                batch = _cast_floats(batch, torch.bfloat16)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
                out = engine(batch, generator=gen)  # Intention Decoupling as mcfg.decoupling says
            engine.backward(out.loss)
            engine.step()
            for k in ("loss", "action_loss", "lm_loss"):
                sums[k] += float(getattr(out, k).detach()) / cfg.grad_accum_steps
            sums["masked_fraction"] += out.masked_fraction / cfg.grad_accum_steps
            state.samples_seen += len(samples)
        state.step += 1
        grad_norm = engine.get_global_grad_norm()
        sums.update(lr=lr, grad_norm=float(grad_norm) if grad_norm is not None else float("nan"))
        window.add(sums, samples=micro * cfg.grad_accum_steps * world_size, wait_s=wait)

        if fault is not None:
            fault.maybe_kill(state.step, rank)
        final = state.step == cfg.max_steps
        due_ckpt = final or state.step % cfg.checkpoint_every == 0
        if due_ckpt or state.step % cfg.log_every == 0:
            metrics = {**window.summary(), "step": state.step, "epoch": state.epoch, "resumed_from": resumed_from}
            window.reset()
            logger.log(state.step, metrics)
            if due_ckpt:
                with tempfile.TemporaryDirectory(prefix="syvla-ckpt-") as tmp:
                    save_training_checkpoint(tmp, engine, norm_stats, state, cfg, rank)
                    report(metrics, Path(tmp))
            else:
                report(metrics, None)
    logger.close(plot=True)
    return state
