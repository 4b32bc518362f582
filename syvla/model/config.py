"""Model configuration: frozen dataclasses, one per component, with presets.

`debug` builds in well under a second and trains on a CPU; `paper` holds the
sizes of the paper's App. A (Qwen2.5-VL-3B, 20 query tokens, a 15-layer,
1408-wide action expert, chunk 50).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from syvla.cli import Presets, field


def _positive(obj, *names):
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be > 0, got {value}")


@dataclasses.dataclass(frozen=True)
class EmbodimentConfig:
    """One robot (= one dataset): its own MLP encoder/decoder pair (App. A)."""

    name: str = field(help="embodiment name (= its dataset name in the prepared data)")
    state_dim: int = field(help="proprioceptive state size")
    action_dim: int = field(help="action size per step")
    cameras: tuple[str, ...] = field(help="camera names, in the order the expert's image tower sees them")
    vlm_camera: str = field("", "camera whose image the VLM sees; '' = the first")

    def __post_init__(self):
        if not self.name:
            raise ValueError("EmbodimentConfig.name must be non-empty")
        _positive(self, "state_dim", "action_dim")
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if not self.cameras:
            raise ValueError(f"EmbodimentConfig.cameras of {self.name!r} must name at least one camera")
        if self.vlm_camera and self.vlm_camera not in self.cameras:
            raise ValueError(f"EmbodimentConfig.vlm_camera {self.vlm_camera!r} is not one of {self.cameras}")

    @property
    def prompt_camera(self) -> str:
        return self.vlm_camera or self.cameras[0]


@dataclasses.dataclass(frozen=True)
class VLMConfig:
    """The Qwen2.5-VL backbone.

    `source="debug"` builds a tiny random model and an offline tokenizer; any
    other value is a local directory or a hub name given to from_pretrained.
    """

    source: str = field("debug", "'debug' (tiny random Qwen2.5-VL, offline tokenizer) or a local dir / hub name")
    # Sizes of the debug model; a real `source` brings its own and these are ignored.
    hidden_size: int = field(64, "debug VLM hidden size")
    num_layers: int = field(2, "debug VLM decoder layers")
    num_heads: int = field(4, "debug VLM attention heads")
    num_kv_heads: int = field(2, "debug VLM key/value heads (grouped-query attention)")
    intermediate_size: int = field(128, "debug VLM MLP width")
    vision_depth: int = field(2, "debug VLM vision-encoder layers")
    vision_hidden_size: int = field(32, "debug VLM vision-encoder width")
    vision_heads: int = field(2, "debug VLM vision-encoder heads")
    vocab_size: int = field(1024, "debug tokenizer's BPE vocabulary (special tokens come on top)")
    image_size: int = field(56, "side the VLM's camera image is resized to (multiple of 28)")
    dtype: str = field("float32", "VLM weights dtype: float32, bfloat16 (GPUs) or float16")

    def __post_init__(self):
        _positive(self, "hidden_size", "num_layers", "num_heads", "num_kv_heads", "image_size")
        if self.image_size % 28:
            raise ValueError(f"VLMConfig.image_size must be a multiple of 28 (patch 14 x merge 2), got {self.image_size}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"VLMConfig.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclasses.dataclass(frozen=True)
class VisionTowerConfig:
    """The action expert's own SigLIP tower (transformers SiglipVisionModel)."""

    image_size: int = field(32, "pixels; side the expert's camera images are resized to, a multiple of patch_size "
                                "(paper preset 256)")
    patch_size: int = field(8, "SigLIP patch side in pixels (paper preset 16)")
    hidden_size: int = field(32, "SigLIP hidden width (paper preset 1024, SigLIP-L)")
    num_layers: int = field(1, "SigLIP encoder layers (paper preset 24)")
    num_heads: int = field(2, "SigLIP attention heads (paper preset 16)")
    intermediate_size: int = field(64, "SigLIP MLP width (paper preset 4096)")
    pretrained: str = field("", "SigLIP checkpoint (local dir / hub name) loaded into the tower unless vlm.source is "
                                "debug; '' = random init")

    def __post_init__(self):
        _positive(self, "image_size", "patch_size", "hidden_size", "num_layers", "num_heads")
        if self.image_size % self.patch_size:
            raise ValueError("VisionTowerConfig.image_size must be a multiple of patch_size")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclasses.dataclass(frozen=True)
class ActionExpertConfig:
    """Flow-matching transformer (App. A: 15 layers, hidden 1408, 32 heads, ff 2.67)."""

    width: int = field(64, "transformer width (App. A paper: 1408)")
    depth: int = field(2, "transformer layers (App. A paper: 15)")
    num_heads: int = field(4, "attention heads (App. A paper: 32)")
    ff_ratio: float = field(2.67, "MLP width / transformer width (App. A: 2.67)")
    chunk_len: int = field(50, "action chunk length in control steps (App. A: 50)")
    image_tokens_per_view: int = field(4, "SigLIP patch tokens are pooled to this many per camera view")
    dropout: float = field(0.0, "dropout in the expert's attention and MLP")
    step_times: bool = field(False, "a flow time per chunk step (a zero-initialized embedding on each action "
                                    "token), needed by training-time action conditioning (flow.prefix_conditioning)")
    vision: VisionTowerConfig = field(default_factory=VisionTowerConfig, help="the expert's own SigLIP image tower")

    def __post_init__(self):
        _positive(self, "width", "depth", "num_heads", "ff_ratio", "chunk_len", "image_tokens_per_view")
        if self.width % self.num_heads:
            raise ValueError(f"ActionExpertConfig.width {self.width} must be divisible by num_heads {self.num_heads}")

    @property
    def ff_dim(self) -> int:
        return int(round(self.width * self.ff_ratio))


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Flow matching. Convention: t = 1 is pure noise, t = 0 the data."""

    num_steps: int = field(10, "Euler steps from noise (t = 1) to actions (t = 0) at inference")
    time_power: float = field(1.5, "training t ~ Beta(time_power, 1) on [t_min, 1] (favours noisier t)")
    t_min: float = field(0.001, "smallest training time t")
    prefix_conditioning: float = field(0.0, "training-time action conditioning: the fraction of robot samples "
                                            "trained with their first d ~ U{1..max_prefix} steps given clean "
                                            "(t = 0, no loss there), so real-time chunking can inpaint the committed "
                                            "prefix exactly at inference; needs expert.step_times")
    max_prefix: int = field(25, "the longest clean prefix drawn for prefix_conditioning, in chunk steps")

    def __post_init__(self):
        _positive(self, "num_steps", "time_power", "max_prefix")
        if not 0.0 <= self.t_min < 1.0:
            raise ValueError(f"FlowConfig.t_min must be in [0, 1), got {self.t_min}")
        if not 0.0 <= self.prefix_conditioning <= 1.0:
            raise ValueError(f"FlowConfig.prefix_conditioning must be in [0, 1], got {self.prefix_conditioning}")


@dataclasses.dataclass(frozen=True)
class DecouplingConfig:
    """Intention Decoupling (§3.2)."""

    enabled: bool = field(True, "the one switch, read by training and RL losses; false = the ablation")
    tau: float = field(0.05, "quantile of per-state gradient L2 norms below which states are zeroed (Table 4)")
    # Pass 1 only ranks gradient norms; "bfloat16" runs it under autocast (what GPU training uses
    # anyway). The default is the exact fp32 probe: on CPU, bf16 autocast was not reliably faster
    # and picked the same masked states ~94% of the time (bench/intention_decoupling.py).
    probe_dtype: str = field("float32", "dtype of the gradient-norm probe pass: float32 (exact), bfloat16, float16")

    def __post_init__(self):
        if not 0.0 <= self.tau < 1.0:
            raise ValueError(f"DecouplingConfig.tau must be in [0, 1), got {self.tau}")
        if self.probe_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"DecouplingConfig.probe_dtype must be float32, bfloat16 or float16, got {self.probe_dtype!r}")


@dataclasses.dataclass(frozen=True)
class SyVLAConfig:
    vlm: VLMConfig = field(default_factory=VLMConfig, help="the Qwen2.5-VL backbone")
    expert: ActionExpertConfig = field(default_factory=ActionExpertConfig, help="the flow-matching action expert")
    flow: FlowConfig = field(default_factory=FlowConfig, help="flow-matching time sampling and inference steps")
    decoupling: DecouplingConfig = field(default_factory=DecouplingConfig, help="Intention Decoupling (§3.2)")
    # Required: no default robot, so a model never silently gets one.
    embodiments: tuple[EmbodimentConfig, ...] = field(
        (), "the robots the model acts for; training fills it from the prepared data (Meta-World: "
            "syvla.sim.metaworld.EMBODIMENT)")
    num_query_tokens: int = field(20, "Feature Query Tokens N (§3.1, App. A: 20; Table 5)")
    adapter_hidden: int = field(0, "adapter MLP hidden width; 0 = expert width")
    max_cot_tokens: int = field(96, "bound on generated chain of thought at inference (the longest templated "
                                     "Meta-World plan is 85 debug-tokenizer tokens)")
    max_prompt_tokens: int = field(96, "text tokens kept from the instruction (+ CoT in training)")
    lm_loss_weight: float = field(1.0, "weight of the LM loss on CoT / VQA answer tokens")

    def __post_init__(self):
        _positive(self, "num_query_tokens", "max_cot_tokens", "max_prompt_tokens")
        object.__setattr__(self, "embodiments", tuple(self.embodiments))
        names = [e.name for e in self.embodiments]
        if not names:
            raise ValueError("SyVLAConfig.embodiments is required: the robots the model acts for "
                             "(e.g. syvla.sim.metaworld.EMBODIMENT, or the prepared data's embodiments)")
        if len(set(names)) != len(names):
            raise ValueError(f"SyVLAConfig.embodiments must be non-empty with unique names, got {names}")
        if self.flow.prefix_conditioning > 0 and not self.expert.step_times:
            raise ValueError("SyVLAConfig.flow.prefix_conditioning > 0 needs expert.step_times true (the expert "
                             "must take a flow time per chunk step to be given a clean prefix)")
        if self.flow.prefix_conditioning > 0 and self.flow.max_prefix >= self.expert.chunk_len:
            raise ValueError(f"SyVLAConfig.flow.max_prefix {self.flow.max_prefix} must be below expert.chunk_len "
                             f"{self.expert.chunk_len} (some steps must be left to learn)")

    def embodiment(self, name: str) -> EmbodimentConfig:
        for e in self.embodiments:
            if e.name == name:
                return e
        raise KeyError(f"unknown embodiment {name!r}; this model knows {[e.name for e in self.embodiments]}")

    def embodiment_index(self, name: str) -> int:
        return [e.name for e in self.embodiments].index(self.embodiment(name).name)

    @property
    def max_state_dim(self) -> int:
        return max(e.state_dim for e in self.embodiments)

    @property
    def max_action_dim(self) -> int:
        return max(e.action_dim for e in self.embodiments)

    @property
    def max_cameras(self) -> int:
        return max(len(e.cameras) for e in self.embodiments)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SyVLAConfig":
        d = dict(d)
        expert = dict(d.pop("expert", {}))
        vision = VisionTowerConfig(**expert.pop("vision", {}))
        return cls(
            vlm=VLMConfig(**d.pop("vlm", {})),
            expert=ActionExpertConfig(vision=vision, **expert),
            flow=FlowConfig(**d.pop("flow", {})),
            decoupling=DecouplingConfig(**d.pop("decoupling", {})),
            embodiments=tuple(EmbodimentConfig(**{**e, "cameras": tuple(e["cameras"])}) for e in d.pop("embodiments", [])),
            **d,
        )


def debug_config(**overrides) -> SyVLAConfig:
    """Tiny sizes: builds in < 1 s, a training step in tens of ms on a CPU. Pass `embodiments`."""
    return SyVLAConfig(**overrides)


def paper_config(vlm_source: str = "Qwen/Qwen2.5-VL-3B-Instruct", **overrides) -> SyVLAConfig:
    """Sizes of the paper's App. A. The VLM loads from `vlm_source` (local dir or hub name). Pass `embodiments`."""
    sizes = dict(
        vlm=VLMConfig(source=vlm_source, image_size=224, dtype="bfloat16"),
        expert=ActionExpertConfig(
            width=1408,
            depth=15,
            num_heads=32,
            ff_ratio=2.67,
            chunk_len=50,
            image_tokens_per_view=64,
            # SigLIP-L/16 at 256 px: with it the expert counts ~0.70B, the paper's 0.69B.
            vision=VisionTowerConfig(image_size=256, patch_size=16, hidden_size=1024, num_layers=24,
                                     num_heads=16, intermediate_size=4096, pretrained="google/siglip-large-patch16-256"),
        ),
        num_query_tokens=20,
        max_cot_tokens=128,
        max_prompt_tokens=256,
    )
    return SyVLAConfig(**{**sizes, **overrides})


PRESETS = Presets("model", {"debug": debug_config, "paper": paper_config})


def preset(name: str, **overrides) -> SyVLAConfig:
    return PRESETS.build(name, **overrides)
