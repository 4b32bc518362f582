"""Checkpoint directories (docs/architecture.md#checkpoints). Loading never unpickles."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from syvla import constants as K
from syvla.model.config import SyVLAConfig
from syvla.normalize import NormStats


def save_checkpoint(directory: str | Path, model, norm_stats: NormStats, policy_version: int = 0,
                    extra: dict | None = None) -> Path:
    """Write a complete checkpoint atomically: into a temp dir beside `directory`, then rename."""
    from syvla.model.vlm import save_processor, vlm_config_dict

    directory = Path(directory)
    missing = [e.name for e in model.cfg.embodiments if e.name not in norm_stats]
    if missing:
        raise KeyError(f"cannot save a checkpoint without normalization statistics for {missing}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        cfg = {"format_version": K.CKPT_FORMAT_VERSION, "model": model.cfg.to_dict(), **(extra or {})}
        (tmp / K.CKPT_CONFIG).write_text(json.dumps(cfg, indent=1))
        (tmp / K.CKPT_VLM_CONFIG).write_text(json.dumps(vlm_config_dict(model.vlm), indent=1))
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        # Tied weights (lm_head = embed_tokens) share storage; safetensors wants each stored once.
        save_file(_dedupe(state), str(tmp / K.CKPT_WEIGHTS), metadata={"format": "pt"})
        norm_stats.save(tmp / K.CKPT_NORM_STATS)
        save_processor(model.processor, tmp / K.CKPT_PROCESSOR_DIR)
        (tmp / K.CKPT_POLICY_VERSION).write_text(f"{int(policy_version)}\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _dedupe(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    seen, out = {}, {}
    for k, v in state.items():
        key = (v.data_ptr(), v.shape, v.dtype) if v.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = k
        out[k] = v
    return out


def read_config(directory: str | Path) -> SyVLAConfig:
    directory = _check_dir(directory)
    raw = json.loads((directory / K.CKPT_CONFIG).read_text())
    if raw.get("format_version") != K.CKPT_FORMAT_VERSION:
        raise ValueError(f"{directory / K.CKPT_CONFIG}: format_version {raw.get('format_version')} is not "
                         f"{K.CKPT_FORMAT_VERSION}")
    return SyVLAConfig.from_dict(raw["model"])


def read_policy_version(directory: str | Path) -> int:
    path = _check_dir(directory) / K.CKPT_POLICY_VERSION
    try:
        return int(path.read_text().strip())
    except ValueError as e:
        raise ValueError(f"{path}: policy version must be an integer") from e


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu"):
    """Return (SyVLA model in eval mode, NormStats, policy_version)."""
    from syvla.model.syvla import SyVLA
    from syvla.model.vlm import build_vlm, load_processor

    directory = _check_dir(directory)
    cfg = read_config(directory)
    processor = load_processor(directory / K.CKPT_PROCESSOR_DIR)
    vlm_cfg = json.loads((directory / K.CKPT_VLM_CONFIG).read_text())
    # Built with random init, then overwritten: simple and keeps non-persistent buffers
    # (rotary frequencies, position ids) right. The paper preset pays one init on load.
    vlm, processor = build_vlm(cfg.vlm, vlm_config=vlm_cfg, processor=processor)
    model = SyVLA(_no_pretrained(cfg), vlm=vlm, processor=processor)
    state = load_file(str(directory / K.CKPT_WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _tied(k, state)]
    if missing or unexpected:
        raise KeyError(f"{directory / K.CKPT_WEIGHTS}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.to(device)
    norm_stats = NormStats.load(directory / K.CKPT_NORM_STATS)
    for e in cfg.embodiments:
        norm_stats[e.name]  # raises naming the embodiment when its statistics are missing
    return model.eval(), norm_stats, read_policy_version(directory)


def _no_pretrained(cfg: SyVLAConfig) -> SyVLAConfig:
    import dataclasses

    vision = dataclasses.replace(cfg.expert.vision, pretrained="")
    return dataclasses.replace(cfg, expert=dataclasses.replace(cfg.expert, vision=vision))


def _tied(key: str, state: dict) -> bool:
    return key.endswith("lm_head.weight") and any(k.endswith("embed_tokens.weight") for k in state)


def _check_dir(directory: str | Path) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    for name in (K.CKPT_CONFIG, K.CKPT_VLM_CONFIG, K.CKPT_WEIGHTS, K.CKPT_NORM_STATS, K.CKPT_POLICY_VERSION):
        if not (directory / name).exists():
            raise FileNotFoundError(f"checkpoint {directory} lacks {name}")
    return directory
