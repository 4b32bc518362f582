"""Training configuration: frozen dataclasses, one per concern, with named presets.

Presets (`preset(name)`):
    pretrain-paper   Table 7 pretraining: batch 512, cosine with 5000 warm-up steps, lr 1e-4 -> 1e-5,
                     AdamW (0.9, 0.999), eps 1e-8, clip 1.0, 35% multimodal, paper-size model, 32 GPUs
    finetune-paper   Table 7 fine-tuning: batch 32, 1000 warm-up steps, lr 3e-5 -> 3e-6,
                     AdamW (0.9, 0.995), eps 1e-8, clip 1.0, 30% multimodal, 8 GPUs
    pretrain-debug   a few-minute CPU run on Meta-World demos with 2 workers
    finetune-debug   the matching fine-tune (every task of --data.path unless --data.tasks picks some)
Every field can be overridden from the command line (`syvla.cli`), e.g.
`--optim.peak_lr 3e-4 --model.expert.width 96 --scale.num_workers 1`; the Intention Decoupling
ablation is `--model.decoupling.enabled false` (the model config holds the one switch).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from syvla.cli import Presets, field
from syvla.model.config import ActionExpertConfig, SyVLAConfig, VisionTowerConfig, VLMConfig, paper_config
from syvla.sim import metaworld as mw

STAGES = ("pretrain", "finetune")
PRECISIONS = ("auto", "fp32", "bf16")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray placement groups


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW and its cosine-with-warm-up schedule (Table 7)."""

    peak_lr: float = field(1e-4, "learning rate at the end of warm-up (Table 7: 1e-4 pretrain, 3e-5 fine-tune)")
    decay_lr: float = field(1e-5, "learning rate at the last step (Table 7: 1e-5 pretrain, 3e-6 fine-tune)")
    warmup_steps: int = field(5000, "linear warm-up steps (Table 7: 5000 pretrain, 1000 fine-tune)")
    betas: tuple[float, float] = field((0.9, 0.999), "AdamW betas (Table 7: (0.9, 0.999) pretrain, (0.9, 0.995) fine-tune)")
    eps: float = field(1e-8, "AdamW epsilon (Table 7)")
    weight_decay: float = field(0.01, "AdamW weight decay (not in Table 7; torch's default)")
    clip_grad_norm: float = field(1.0, "global gradient L2-norm clip (Table 7)")

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"OptimConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if self.peak_lr <= 0 or self.decay_lr < 0 or self.decay_lr > self.peak_lr:
            raise ValueError(f"OptimConfig needs 0 <= decay_lr <= peak_lr and peak_lr > 0, got "
                             f"peak_lr={self.peak_lr}, decay_lr={self.decay_lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"OptimConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.eps <= 0 or self.weight_decay < 0 or self.clip_grad_norm <= 0:
            raise ValueError("OptimConfig.eps and clip_grad_norm must be > 0 and weight_decay >= 0")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the training frames come from and how the stream mixes them."""

    path: str = field("data/prepared/metaworld", "prepared data root (prepare_data output, syvla.data.prepared: one "
                       "shard folder per dataset, statistics, manifest); VQA datasets prepared there are the multimodal share")
    tasks: tuple[str, ...] = field((), "keep only these tasks (Meta-World names like reach-v3, or instruction text); () = all")
    multimodal_ratio: float = field(0.35, "share of VQA samples in the stream (App. A: 35% pretraining / 30% fine-tuning)")
    cot: bool = field(True, "train on the demos' chain-of-thought text (Think-Before-Act, §3.1) where they have it; "
                            "false drops it (Table 3's 'w/o CoT')")
    shuffle_seed: int = field(0, "seed of the stream's mixing and shuffling (every epoch repeats the same order)")
    prefetch_batches: int = field(2, "batches Ray Data prepares ahead of the train step")

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not 0.0 <= self.multimodal_ratio < 1.0:
            raise ValueError(f"DataConfig.multimodal_ratio must be in [0, 1), got {self.multimodal_ratio}")
        if self.prefetch_batches < 0:
            raise ValueError(f"DataConfig.prefetch_batches must be >= 0, got {self.prefetch_batches}")


@dataclasses.dataclass(frozen=True)
class ScaleConfig:
    """Ray Train workers (one DeepSpeed rank each)."""

    num_workers: int = field(2, "data-parallel workers")
    use_gpu: bool = field(False, "one GPU per worker")
    cpus_per_worker: float = field(0.5, "CPUs reserved per worker; < 1 on small machines leaves CPUs to Ray Data")
    max_failures: int = field(2, "worker-group restarts from the last checkpoint before the run fails")
    placement_strategy: str = field("PACK", "Ray placement of the workers: PACK (fewest nodes), SPREAD, "
                                             "STRICT_PACK or STRICT_SPREAD (one worker per node)")

    def __post_init__(self):
        if self.num_workers < 1 or self.cpus_per_worker <= 0 or self.max_failures < -1:
            raise ValueError(f"ScaleConfig needs num_workers >= 1, cpus_per_worker > 0, max_failures >= -1; got {self}")
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise ValueError(f"ScaleConfig.placement_strategy must be one of {PLACEMENT_STRATEGIES}, "
                             f"got {self.placement_strategy!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    name: str = field("pretrain-debug", "run name: Ray Train keeps the run under storage_path/name; same name = resume")
    stage: str = field("pretrain", "pretrain or finetune (recorded in checkpoints)")
    storage_path: str = field("runs", "Ray Train storage (local dir or URI); relative paths are made absolute")
    model: SyVLAConfig = field(default_factory=lambda: _debug_model(), help="the policy (syvla.model.config); --model.* flags")
    init_from: str = field("", "policy checkpoint to start from (fine-tuning): its model, plus the data's robots it "
                               "lacks; --model.* flags that may change on top of it apply, others are refused")
    optim: OptimConfig = field(default_factory=OptimConfig, help="AdamW and its schedule (Table 7)")
    data: DataConfig = field(default_factory=DataConfig, help="prepared data and the mixture stream")
    scale: ScaleConfig = field(default_factory=ScaleConfig, help="Ray Train workers")
    global_batch_size: int = field(512, "samples per optimizer step over all workers (Table 7: 512 / 32)")
    grad_accum_steps: int = field(1, "micro-batches accumulated per optimizer step")
    max_steps: int = field(100_000, "optimizer steps; the cosine schedule ends here")
    checkpoint_every: int = field(1000, "report a checkpoint every N optimizer steps (and at the end)")
    keep_checkpoints: int = field(3, "checkpoints Ray Train keeps (the newest)")
    log_every: int = field(50, "console / TensorBoard logging period in steps")
    train_on_padding: bool = field(False, "also fit the chunk steps past an episode's end (the repeated last action, "
                                           "masked by default): closed-loop policies then hold still after the goal")
    precision: str = field("auto", "auto = bf16 on GPU, fp32 on CPU")
    zero_stage: int = field(2, "DeepSpeed ZeRO stage (the paper: 2)")
    seed: int = field(0, "model init and flow-noise seed")

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"TrainConfig.stage must be one of {STAGES}, got {self.stage!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.name or "/" in self.name:
            raise ValueError(f"TrainConfig.name must be a non-empty name without '/', got {self.name!r}")
        for name in ("global_batch_size", "grad_accum_steps", "max_steps", "checkpoint_every", "keep_checkpoints",
                     "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"TrainConfig.zero_stage must be 0..3, got {self.zero_stage}")
        per_step = self.scale.num_workers * self.grad_accum_steps
        if self.global_batch_size % per_step:
            raise ValueError(f"TrainConfig.global_batch_size {self.global_batch_size} must be divisible by "
                             f"scale.num_workers x grad_accum_steps = {per_step}")

    @property
    def micro_batch_size(self) -> int:
        """Samples per worker per forward/backward."""
        return self.global_batch_size // (self.scale.num_workers * self.grad_accum_steps)

    def storage_uri(self) -> str:
        """storage_path, made absolute when it is a local path (Ray Train needs absolute paths)."""
        if "://" in self.storage_path:
            return self.storage_path
        return str(Path(self.storage_path).expanduser().resolve())

    def with_absolute_paths(self) -> "TrainConfig":
        """This config with its local paths (storage, init_from, data) absolute, as the driver sees them:
        workers run in other directories, and a saved config must mean the same from anywhere."""
        def absolute(path: str) -> str:
            return path if not path or "://" in path else str(Path(path).expanduser().resolve())

        return dataclasses.replace(self, storage_path=self.storage_uri(), init_from=absolute(self.init_from),
                                   data=dataclasses.replace(self.data, path=absolute(self.data.path)))


# ---- presets ------------------------------------------------------------------------------
def _debug_model() -> SyVLAConfig:
    """The model preset `debug`, slightly widened so a CPU run can solve reach-v3.

    Expert 96 wide (vs 64), 2 layers; its SigLIP tower sees 32 px views; the VLM sees 56 px.
    """
    return SyVLAConfig(
        embodiments=(mw.EMBODIMENT,),
        vlm=VLMConfig(),
        expert=ActionExpertConfig(width=96, depth=2, num_heads=4, vision=VisionTowerConfig(image_size=32, patch_size=8)),
        num_query_tokens=8,
    )


def pretrain_paper() -> TrainConfig:
    return TrainConfig(
        name="pretrain-paper", stage="pretrain", model=paper_config(embodiments=(mw.EMBODIMENT,)),
        optim=OptimConfig(peak_lr=1e-4, decay_lr=1e-5, warmup_steps=5000, betas=(0.9, 0.999), eps=1e-8, clip_grad_norm=1.0),
        data=DataConfig(multimodal_ratio=0.35),
        scale=ScaleConfig(num_workers=32, use_gpu=True, cpus_per_worker=8, max_failures=3),
        global_batch_size=512, max_steps=100_000, checkpoint_every=1000, log_every=50,
    )


def finetune_paper() -> TrainConfig:
    return TrainConfig(
        name="finetune-paper", stage="finetune", model=paper_config(embodiments=(mw.EMBODIMENT,)),
        optim=OptimConfig(peak_lr=3e-5, decay_lr=3e-6, warmup_steps=1000, betas=(0.9, 0.995), eps=1e-8, clip_grad_norm=1.0),
        data=DataConfig(multimodal_ratio=0.30),
        scale=ScaleConfig(num_workers=8, use_gpu=True, cpus_per_worker=8, max_failures=3),
        global_batch_size=32, max_steps=30_000, checkpoint_every=1000, log_every=50,
    )


def pretrain_debug() -> TrainConfig:
    return TrainConfig(
        name="pretrain-debug", stage="pretrain", model=_debug_model(),
        optim=OptimConfig(peak_lr=1e-3, decay_lr=1e-4, warmup_steps=100, betas=(0.9, 0.999), eps=1e-8, clip_grad_norm=1.0),
        data=DataConfig(multimodal_ratio=0.0),  # the Meta-World demo set has no VQA data; see DataConfig
        scale=ScaleConfig(num_workers=2, use_gpu=False, cpus_per_worker=0.5, max_failures=2),
        global_batch_size=32, max_steps=1000, checkpoint_every=250, log_every=25, train_on_padding=True,
    )


def finetune_debug() -> TrainConfig:
    return TrainConfig(
        name="finetune-debug", stage="finetune", model=_debug_model(), init_from="checkpoints/pretrain/pretrain-debug",
        optim=OptimConfig(peak_lr=3e-4, decay_lr=3e-5, warmup_steps=50, betas=(0.9, 0.995), eps=1e-8, clip_grad_norm=1.0),
        data=DataConfig(multimodal_ratio=0.0),
        scale=ScaleConfig(num_workers=2, use_gpu=False, cpus_per_worker=0.5, max_failures=2),
        global_batch_size=32, max_steps=1000, checkpoint_every=250, log_every=25, train_on_padding=True,
    )


PRESETS = Presets("training", {
    "pretrain-paper": pretrain_paper,
    "finetune-paper": finetune_paper,
    "pretrain-debug": pretrain_debug,
    "finetune-debug": finetune_debug,
})


def preset(name: str) -> TrainConfig:
    return PRESETS.build(name)
