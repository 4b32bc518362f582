"""Policy: the inference core (no Ray) that serving, evaluation and RL rollouts wrap.

An observation is a dict:
    {"embodiment": str, "images": {camera: uint8 [H, W, 3]}, "state": float32 [state_dim],
     "instruction": str, "think": bool (optional), "seed": int | None (optional)}
`infer` returns {"actions": float32 [chunk, action_dim] in the robot's own units,
"policy_version": int, "cot": str | None}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from syvla import constants as K
from syvla.model.checkpoint import load_checkpoint, save_checkpoint
from syvla.model.config import EmbodimentConfig, SyVLAConfig, debug_config
from syvla.model.processing import build_batch
from syvla.normalize import DatasetStats, FeatureStats, NormStats


class ObservationError(ValueError):
    """An observation is malformed; the message names the field."""


@dataclass(frozen=True)
class _Loaded:
    model: torch.nn.Module
    norm_stats: NormStats
    version: int


class Policy:
    def __init__(self, model, norm_stats: NormStats, policy_version: int = 0, device: str = "cpu"):
        self.device = torch.device(device)
        self._loaded = _Loaded(model.to(self.device).eval(), norm_stats, int(policy_version))

    @classmethod
    def load(cls, ckpt_dir: str | Path, device: str = "cpu") -> "Policy":
        model, stats, version = load_checkpoint(ckpt_dir, device)
        return cls(model, stats, version, device)

    # ---- state ------------------------------------------------------------------
    @property
    def policy_version(self) -> int:
        return self._loaded.version

    @property
    def config(self) -> SyVLAConfig:
        return self._loaded.model.cfg

    def metadata(self) -> dict:
        cfg = self.config
        return {
            "embodiments": {e.name: {"state_dim": e.state_dim, "action_dim": e.action_dim, "cameras": list(e.cameras)}
                            for e in cfg.embodiments},
            "chunk_len": cfg.expert.chunk_len,
            "policy_version": self.policy_version,
            "model": {"vlm": cfg.vlm.source, "num_query_tokens": cfg.num_query_tokens,
                      "flow_steps": cfg.flow.num_steps},
        }

    # ---- inference ----------------------------------------------------------------
    def validate(self, obs: dict) -> dict:
        """Check an observation against the model; return the model sample dict. Raises ObservationError."""
        cfg = self.config
        if not isinstance(obs, dict):
            raise ObservationError("observation must be an object")
        name = obs.get("embodiment")
        try:
            emb = cfg.embodiment(name)
        except KeyError as e:
            raise ObservationError(f"embodiment: {e.args[0]}") from None
        images = obs.get("images")
        if not isinstance(images, dict):
            raise ObservationError("images: must map camera name -> uint8 [H, W, 3]")
        for cam in emb.cameras:
            if cam not in images:
                raise ObservationError(f"images.{cam}: missing camera for embodiment {emb.name!r}")
            img = np.asarray(images[cam])
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 1:
                raise ObservationError(f"images.{cam}: expected uint8 [H, W, 3], got {img.dtype} {list(img.shape)}")
        state = np.asarray(obs.get("state", []), dtype=np.float32)
        if state.shape != (emb.state_dim,):
            raise ObservationError(f"state: expected shape [{emb.state_dim}], got {list(state.shape)}")
        if not np.all(np.isfinite(state)):
            raise ObservationError("state: contains NaN or inf")
        instruction = obs.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ObservationError("instruction: must be a non-empty string")
        return {"embodiment": emb.name, "images": {c: np.asarray(images[c]) for c in emb.cameras}, K.STATE: state,
                K.TASK: instruction, K.COT: None, K.KIND: K.KIND_ROBOT}

    def infer(self, obs: dict) -> dict:
        return self.infer_batch([obs])[0]

    @torch.no_grad()
    def infer_batch(self, observations: list[dict]) -> list[dict]:
        """One forward for many robots; each result carries the version that produced it."""
        loaded = self._loaded  # one consistent (weights, stats, version) for the whole batch
        model, cfg = loaded.model, loaded.model.cfg
        samples = [self.validate(o) for o in observations]
        cots = None
        thinking = [bool(o.get("think", False)) for o in observations]
        if any(thinking):
            batch = build_batch(samples, model.processor, cfg, loaded.norm_stats, training=False)
            generated = model.generate_cot(batch.to(self.device))
            cots = [c if t else None for c, t in zip(generated, thinking)]
        batch = build_batch(samples, model.processor, cfg, loaded.norm_stats, training=False, cots=cots).to(self.device)
        noise = torch.stack([self._noise(o.get("seed"), cfg) for o in observations])
        actions = model.sample_actions(batch, noise=noise).float().cpu().numpy()
        out = []
        for i, s in enumerate(samples):
            emb = cfg.embodiment(s["embodiment"])
            a = loaded.norm_stats[emb.name].action.unnormalize(actions[i, :, : emb.action_dim])
            out.append({"actions": a, "policy_version": loaded.version, "cot": cots[i] if cots else None})
        return out

    @staticmethod
    def _noise(seed, cfg: SyVLAConfig) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return torch.randn(cfg.expert.chunk_len, cfg.max_action_dim, generator=gen)


def unit_norm_stats(cfg: SyVLAConfig) -> NormStats:
    """Identity statistics (mean 0, std 1, q01 -1, q99 1) for every embodiment.

    Only for checkpoints of untrained models (smoke tests, serving benchmarks);
    trained checkpoints carry the statistics the data pipeline computed.
    """
    def unit(dim):
        return FeatureStats(np.zeros(dim), np.ones(dim), -np.ones(dim), np.ones(dim), count=0)

    return NormStats({e.name: DatasetStats(unit(e.state_dim), unit(e.action_dim)) for e in cfg.embodiments})


def make_debug_checkpoint(path: str | Path, seed: int = 0, policy_version: int = 0,
                          cfg: SyVLAConfig | None = None, embodiments: Sequence[EmbodimentConfig] = ()) -> Path:
    """Write an untrained checkpoint with unit statistics (for tests and benchmarks): model `cfg`,
    or the debug preset for `embodiments`."""
    from syvla.model.syvla import SyVLA

    torch.manual_seed(seed)
    cfg = cfg or debug_config(embodiments=tuple(embodiments))
    model = SyVLA(cfg)
    return save_checkpoint(path, model, unit_norm_stats(cfg), policy_version)
