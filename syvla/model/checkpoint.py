"""The checkpoint directory format (docs/architecture.md#checkpoints): its writer, readers and file names.

    <dir>/config.json         {"format_version", "model": SyVLAConfig dict, **extra (e.g. "train")}
    <dir>/vlm_config.json     the VLM's transformers config
    <dir>/model.safetensors   every weight (tied ones stored once)
    <dir>/norm_stats.json     NormStats of every embodiment the model knows
    <dir>/processor/          tokenizer / image processor files
    <dir>/policy_version      the version, one integer (written last; the directory is renamed into place)

Nothing else names these files: ask `is_checkpoint_dir`, read with `read_config`, `read_metadata`,
`read_norm_stats`, `read_policy_version`, `load_checkpoint`. Loading never unpickles.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from syvla.model.config import SyVLAConfig
from syvla.normalize import NORM_STATS_FILE, NormStats

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PROCESSOR_DIR = "processor"
VLM_CONFIG_FILE = "vlm_config.json"
POLICY_VERSION_FILE = "policy_version"
FORMAT_VERSION = 1
REQUIRED_FILES = (CONFIG_FILE, VLM_CONFIG_FILE, WEIGHTS_FILE, NORM_STATS_FILE, POLICY_VERSION_FILE)


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
        cfg = {"format_version": FORMAT_VERSION, "model": model.cfg.to_dict(), **(extra or {})}
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=1))
        (tmp / VLM_CONFIG_FILE).write_text(json.dumps(vlm_config_dict(model.vlm), indent=1))
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        # Tied weights (lm_head = embed_tokens) share storage; safetensors wants each stored once.
        save_file(_dedupe(state), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        norm_stats.save(tmp / NORM_STATS_FILE)
        save_processor(model.processor, tmp / PROCESSOR_DIR)
        (tmp / POLICY_VERSION_FILE).write_text(f"{int(policy_version)}\n")
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


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a complete checkpoint directory (every file of the format present)."""
    path = Path(path)
    return path.is_dir() and all((path / name).exists() for name in REQUIRED_FILES)


def newest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The most recently written checkpoint directory under `root` (itself or two levels deep), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = [p for p in [root, *root.glob("*"), *root.glob("*/*")] if is_checkpoint_dir(p)]
    return max(found, key=lambda p: (p / POLICY_VERSION_FILE).stat().st_mtime, default=None)


def read_metadata(directory: str | Path) -> dict:
    """config.json as written: {"format_version", "model": SyVLAConfig dict, **extra} (e.g. "train")."""
    directory = _check_dir(directory)
    raw = json.loads((directory / CONFIG_FILE).read_text())
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory / CONFIG_FILE}: format_version {raw.get('format_version')} is not "
                         f"{FORMAT_VERSION}")
    return raw


def read_train_on_padding(directory: str | Path) -> bool | None:
    """Whether the imitation training that made this checkpoint fitted the chunks' hold-still padding
    (its TrainConfig.train_on_padding, carried through RL versions); None when it records no training."""
    value = read_metadata(directory).get("train", {}).get("config", {}).get("train_on_padding")
    return None if value is None else bool(value)


def read_config(directory: str | Path) -> SyVLAConfig:
    return SyVLAConfig.from_dict(read_metadata(directory)["model"])


def read_norm_stats(directory: str | Path) -> NormStats:
    """The checkpoint's normalization statistics (norm_stats.json)."""
    return NormStats.load(_check_dir(directory) / NORM_STATS_FILE)


def read_policy_version(directory: str | Path) -> int:
    path = _check_dir(directory) / POLICY_VERSION_FILE
    try:
        return int(path.read_text().strip())
    except ValueError as e:
        raise ValueError(f"{path}: policy version must be an integer") from e


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu", config: SyVLAConfig | None = None):
    """Return (SyVLA model in eval mode, NormStats, policy_version).

    `config`: build the model from this config instead of the checkpoint's own, for fine-tuning
    (syvla.model.transfer.finetune_config derives it). Embodiments it adds get freshly initialised
    encoder/decoders (seed torch first for a reproducible init), a per-step time embedding it adds starts
    at zero; every other weight must load.
    The returned statistics are the checkpoint's: the caller adds those of the new embodiments.
    """
    from syvla.model.syvla import SyVLA
    from syvla.model.transfer import fit_state_dict, fresh_prefixes
    from syvla.model.vlm import build_vlm, load_processor

    directory = _check_dir(directory)
    saved = read_config(directory)
    cfg = saved if config is None else config
    processor = load_processor(directory / PROCESSOR_DIR)
    vlm_cfg = json.loads((directory / VLM_CONFIG_FILE).read_text())
    # Built with random init, then overwritten: simple and keeps non-persistent buffers
    # (rotary frequencies, position ids) right. The paper preset pays one init on load.
    vlm, processor = build_vlm(cfg.vlm, vlm_config=vlm_cfg, processor=processor)
    model = SyVLA(_no_pretrained(cfg), vlm=vlm, processor=processor)
    fresh = fresh_prefixes(saved, cfg)
    state = fit_state_dict(load_file(str(directory / WEIGHTS_FILE)), model.state_dict())
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _tied(k, state) and not (fresh and k.startswith(fresh))]
    if missing or unexpected:
        raise KeyError(f"{directory / WEIGHTS_FILE}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.to(device)
    norm_stats = read_norm_stats(directory)
    for e in saved.embodiments:
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
    for name in REQUIRED_FILES:
        if not (directory / name).exists():
            raise FileNotFoundError(f"checkpoint {directory} lacks {name}")
    return directory
