"""The model config a training run uses, resolved on the driver before any worker starts.

Embodiments come from the data: each robot dataset's prepared manifest entry records
its embodiment (syvla.data.prepared.EmbodimentRecord), so nobody types dims or cameras.
- Pretraining: the model gets exactly the prepared robots.
- Fine-tuning (`init_from`): the checkpoint's model, plus the robots it lacks
  (syvla.model.transfer), plus the few `--model.*` flags that may change on top of a
  checkpoint; any other `--model.*` flag is an error naming it.
Every check that can fail here fails before Ray Train starts a worker.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from syvla.model.config import EmbodimentConfig
from syvla.train.config import TrainConfig


def data_embodiments(prepared_root: str) -> list[EmbodimentConfig]:
    """The robot embodiments recorded in a prepared root's manifest, in dataset order."""
    from syvla.data import prepared

    manifest = prepared.read_manifest(prepared_root)
    out, unrecorded = [], []
    for name, entry in manifest.datasets.items():
        if entry.embodiment is not None:
            e = entry.embodiment
            out.append(EmbodimentConfig(e.name, state_dim=e.state_dim, action_dim=e.action_dim, cameras=e.cameras))
        elif entry.kind in (None, "robot"):
            unrecorded.append(name)
    if unrecorded:
        raise ValueError(f"prepared data {prepared_root}: dataset(s) {unrecorded} record no embodiment (prepared by an "
                         f"older syvla); prepare them again with pipelines/prepare_data.py")
    if not out:
        raise ValueError(f"prepared data {prepared_root} holds no robot dataset to train the action expert on")
    return out


def resolve_model(cfg: TrainConfig, model_flags: Mapping[str, Any] | None = None) -> TrainConfig:
    """`cfg` with `model` set as the run will build it; `model_flags`: the `--model.*` flags given
    ({"decoupling.tau": 0.1, ...}). Raises ValueError/KeyError naming the problem."""
    from syvla.data.prepared import load_norm_stats

    embodiments = data_embodiments(cfg.data.path)
    if cfg.init_from:
        from syvla.model.checkpoint import read_config, read_norm_stats
        from syvla.model.transfer import finetune_config

        model = finetune_config(read_config(cfg.init_from), embodiments, dict(model_flags or {}))
        known = load_norm_stats(cfg.data.path).merged(read_norm_stats(cfg.init_from))
    else:
        model = dataclasses.replace(cfg.model, embodiments=tuple(embodiments))
        known = load_norm_stats(cfg.data.path)
    if model_flags and "embodiments" in model_flags:
        model = dataclasses.replace(model, embodiments=apply_given_embodiments(model.embodiments,
                                                                               model_flags["embodiments"]))
    for e in model.embodiments:
        known[e.name]  # KeyError naming the embodiment that has no statistics
    return dataclasses.replace(cfg, model=model)


def apply_given_embodiments(resolved, given) -> tuple[EmbodimentConfig, ...]:
    """`resolved` (from the data and the checkpoint) with the settings of `given` (--model.embodiments /
    a config file) applied: each given robot must be one of `resolved` with the same state/action dims
    and cameras; what the data does not record (`vlm_camera`) is taken from it."""
    by_name = {e.name: e for e in resolved}
    for g in given:
        e = by_name.get(g.name)
        if e is None:
            raise ValueError(f"--model.embodiments names {g.name!r}, which is not in the prepared data or the "
                             f"checkpoint ({sorted(by_name)}); embodiments come from the data")
        for f in ("state_dim", "action_dim", "cameras"):
            if getattr(g, f) != getattr(e, f):
                raise ValueError(f"--model.embodiments: {g.name!r} has {f} {getattr(g, f)!r} but the prepared data "
                                 f"(or checkpoint) has {getattr(e, f)!r}")
        by_name[g.name] = g
    return tuple(by_name[e.name] for e in resolved)
