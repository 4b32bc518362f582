"""Prepare robot/VQA datasets for training: read -> clean -> chunk -> statistics -> shards.

    python pipelines/prepare_data.py                              # data/metaworld -> data/prepared/metaworld
    python pipelines/prepare_data.py --inputs metaworld=data/metaworld llava=data/llava/train.json \\
        --output data/prepared/mix --cleaning.outlier_z 8 --action_representation eef_relative --overwrite true
    ray job submit -- python pipelines/prepare_data.py --output /shared/prepared

Writes <output>/<dataset>/*.parquet (frames + `actions`/`action_mask` chunks),
norm_stats.json (NormStats), cleaning_report.json (also printed) and manifest.json.
Every field of syvla.data.ray_stages.PrepareConfig is a flag; cleaning fields
are --cleaning.<field>.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing

import syvla  # noqa: F401  (installs the torchvision shim first, as in every syvla process)
from syvla.data.ray_stages import PrepareConfig


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    address: str = ""  # Ray address; "" = $RAY_ADDRESS (set by `ray job submit`) or a new local instance
    num_cpus: int = 2  # CPUs of the local Ray instance started when none is running


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _add_fields(parser: argparse.ArgumentParser, cls, prefix: str = "") -> None:
    """One --flag per dataclass field (nested dataclasses as --<field>.<subfield>), defaults from the class."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, flag = hints[f.name], f"--{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            _add_fields(parser, tp, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) is tuple:
            parser.add_argument(flag, nargs="+", type=typing.get_args(tp)[0], default=f.default,
                                help=f"(default: {' '.join(map(str, f.default))})")
        else:
            parser.add_argument(flag, type=_bool if tp is bool else tp, default=f.default,
                                metavar="BOOL" if tp is bool else None, help=f"(default: {f.default!r})")


def _build(cls, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, values, f"{prefix}{f.name}.")
        else:
            v = values[f"{prefix}{f.name}"]
            kwargs[f.name] = tuple(v) if typing.get_origin(tp) is tuple else v
    return cls(**kwargs)


def parse_args(argv=None) -> tuple[PrepareConfig, ClusterConfig]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_fields(parser, PrepareConfig)
    _add_fields(parser, ClusterConfig)
    values = vars(parser.parse_args(argv))
    try:
        return _build(PrepareConfig, values), _build(ClusterConfig, values)
    except ValueError as e:
        parser.error(str(e))


def connect(cluster: ClusterConfig):
    import ray

    if not ray.is_initialized():
        address = cluster.address or os.environ.get("RAY_ADDRESS", "")
        if address:
            ray.init(address=address)  # an existing cluster, e.g. under `ray job submit`
        else:
            # "local": a new instance; without it ray.init joins any cluster it finds under /tmp/ray
            ray.init(address="local", num_cpus=cluster.num_cpus or None, include_dashboard=False)
    return ray


def main(argv=None) -> int:
    cfg, cluster = parse_args(argv)
    connect(cluster)
    from syvla.data.ray_stages import prepare

    print(f"[prepare_data] {', '.join(cfg.inputs)} -> {cfg.output} (chunk {cfg.chunk_len}, "
          f"actions {cfg.action_representation})", flush=True)
    result = prepare(cfg)
    print(result.report.table())
    print(f"[prepare_data] {result.frames_out}/{result.frames_in} frames kept in {result.seconds:.1f} s "
          f"({result.frames_in / max(result.seconds, 1e-9):.0f} frames/s); wrote {result.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
