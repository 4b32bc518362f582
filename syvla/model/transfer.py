"""Fine-tuning a checkpoint on robots it has never seen.

A pretrained checkpoint fixes the model's architecture. Fine-tuning may

- **add embodiments**: each new robot gets a freshly initialised encoder/decoder
  pair (App. A: one MLP pair per dataset); every other weight loads;
- change the few fields that do not change the weights' meaning
  (`FINETUNE_FIELDS`: Intention Decoupling's switch and τ, flow steps at inference,
  the chain-of-thought bound, training-time action conditioning);
- **add the per-step time embedding** (`expert.step_times`, for action conditioning):
  it starts at zero, so the loaded model computes what the checkpoint did.

Any other model field given on top of a checkpoint is refused with an error
naming it: it would be ignored or would not fit the loaded weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from syvla.model.config import EmbodimentConfig, SyVLAConfig

# Dotted SyVLAConfig fields a fine-tuning run may set on top of the checkpoint's config.
FINETUNE_FIELDS = (
    "decoupling.enabled",
    "decoupling.tau",
    "decoupling.probe_dtype",
    "flow.num_steps",
    "flow.prefix_conditioning",
    "flow.max_prefix",
    "max_cot_tokens",
)
# Fields that may go from False to True on top of a checkpoint: they add zero-initialized weights.
ADDABLE_FIELDS = ("expert.step_times",)


def _replace_dotted(cfg, dotted: str, value):
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: _replace_dotted(getattr(cfg, head), rest, value)})


def add_embodiments(cfg: SyVLAConfig, embodiments: Iterable[EmbodimentConfig]) -> SyVLAConfig:
    """`cfg` with the embodiments it lacks appended (known names must agree with it field by field)."""
    known = {e.name: e for e in cfg.embodiments}
    new = []
    for e in embodiments:
        if e.name not in known:
            new.append(e)
            continue
        for f in ("state_dim", "action_dim", "cameras"):
            if getattr(e, f) != getattr(known[e.name], f):
                raise ValueError(f"embodiment {e.name!r}: the data has {f} {getattr(e, f)!r} but the checkpoint's "
                                 f"model was trained with {getattr(known[e.name], f)!r}; rename the dataset to add it "
                                 f"as a new robot")
    return dataclasses.replace(cfg, embodiments=cfg.embodiments + tuple(new)) if new else cfg


def _get_dotted(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_finetune_overrides(overrides: Mapping[str, Any], checkpoint_cfg: SyVLAConfig | None = None) -> None:
    """Raise ValueError naming the first dotted model field that may not change on top of a checkpoint.

    A field outside FINETUNE_FIELDS passes only when its value equals the checkpoint's (e.g. a
    saved run config given back with --config). `embodiments` is the data's business (syvla.train.embodiments).
    Without `checkpoint_cfg` every field outside FINETUNE_FIELDS is refused.
    """
    for key in sorted(overrides):
        if key in FINETUNE_FIELDS or key == "embodiments":
            continue
        if checkpoint_cfg is not None and _get_dotted(checkpoint_cfg, key) == overrides[key]:
            continue
        if key in ADDABLE_FIELDS and overrides[key] is True:
            continue
        raise ValueError(f"--model.{key} cannot be set when fine-tuning from a checkpoint: the checkpoint "
                         f"fixes the architecture"
                         + (f" (it has {_get_dotted(checkpoint_cfg, key)!r})" if checkpoint_cfg is not None else "")
                         + f"; settable on top of it: {', '.join('--model.' + f for f in FINETUNE_FIELDS)}, and "
                         + ", ".join(f"--model.{f} true" for f in ADDABLE_FIELDS))


def finetune_config(checkpoint_cfg: SyVLAConfig, embodiments: Iterable[EmbodimentConfig],
                    overrides: Mapping[str, Any]) -> SyVLAConfig:
    """The model config of a fine-tuning run: the checkpoint's, plus new embodiments and allowed overrides.

    `overrides` maps dotted SyVLAConfig fields (the `--model.*` flags given) to values; `embodiments`
    among them is not applied here (syvla.train.embodiments checks it against the data).
    """
    check_finetune_overrides(overrides, checkpoint_cfg)
    cfg = checkpoint_cfg
    for dotted, value in sorted(overrides.items()):
        if dotted != "embodiments":
            cfg = _replace_dotted(cfg, dotted, value)
    return add_embodiments(cfg, embodiments)


def fresh_prefixes(old: SyVLAConfig, new: SyVLAConfig) -> tuple[str, ...]:
    """State-dict prefixes of the parameters `new` has and a checkpoint of `old` cannot hold: the new
    embodiments' encoder/decoders, and the per-step time embedding when `new` adds it."""
    old_names = {e.name for e in old.embodiments}
    fresh = tuple(f"expert.io.{e.name}." for e in new.embodiments if e.name not in old_names)
    return fresh + (("expert.step_time.",) if new.expert.step_times and not old.expert.step_times else ())


def fit_state_dict(state: dict, model_state: Mapping[str, Any]) -> dict:
    """`state` (a checkpoint's tensors) shaped for a model that may see more cameras.

    The per-view embedding `expert.view_embed` [max_views, k, W] grows when a new robot has
    more cameras than any robot before: the checkpoint's rows load, the new rows keep
    the model's fresh initialisation. Any other shape difference is an error.
    """
    out = dict(state)
    for key, value in state.items():
        target = model_state.get(key)
        if target is None or tuple(target.shape) == tuple(value.shape):
            continue
        if key.endswith("view_embed") and value.shape[1:] == target.shape[1:] and value.shape[0] < target.shape[0]:
            grown = target.detach().clone()
            grown[: value.shape[0]] = value
            out[key] = grown
            continue
        raise ValueError(f"checkpoint tensor {key} has shape {tuple(value.shape)}, the model needs "
                         f"{tuple(target.shape)}")
    return out
