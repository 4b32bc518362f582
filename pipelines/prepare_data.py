"""Prepare robot/VQA datasets for training: read -> clean -> chunk -> statistics -> shards.

    python pipelines/prepare_data.py                              # data/metaworld -> data/prepared/metaworld
    python pipelines/prepare_data.py --inputs metaworld=data/metaworld llava=data/llava/train.json \\
        --output data/prepared/mix --cleaning.outlier_z 8 --action_representation eef_relative --overwrite true
    ray job submit -- python pipelines/prepare_data.py --output /shared/prepared

Writes <output>/<dataset>/*.parquet (frames + `actions`/`action_mask` chunks),
the normalization statistics, the cleaning report (also printed) and the manifest
(the prepared-data format: syvla.data.prepared).
Every field of syvla.data.prepare.PrepareConfig is a flag; cleaning fields
are --cleaning.<field>.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling pipelines (common)

import syvla  # noqa: E402,F401  (installs the torchvision shim first, as in every syvla process)
from common import connect_ray  # noqa: E402
from syvla.cli import field, parse_configs  # noqa: E402
from syvla.data.prepare import PrepareConfig  # noqa: E402
from syvla.sim import metaworld as mw  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    address: str = field("", "Ray address; '' = $RAY_ADDRESS (set by `ray job submit`) or a new local instance")
    num_cpus: int = field(2, "CPUs of the local Ray instance started when none is running")


def parse_args(argv=None) -> tuple[PrepareConfig, ClusterConfig]:
    return parse_configs(argv, __doc__, PrepareConfig(), ClusterConfig())


def main(argv=None) -> int:
    cfg, cluster = parse_args(argv)
    from syvla.data.prepare import check_output, prepare

    check_output(cfg)  # before Ray starts: FileExistsError naming a folder it may not write
    connect_ray(cluster.address, cluster.num_cpus)

    print(f"[prepare_data] {', '.join(cfg.inputs)} -> {cfg.output} (chunk {cfg.chunk_len}, "
          f"actions {cfg.action_representation})", flush=True)
    result = prepare(cfg, eef_specs={mw.DATASET_NAME: mw.EEF_SPEC})  # the robots whose EEF pose we know
    print(result.report.table())
    print(f"[prepare_data] {result.frames_out}/{result.frames_in} frames kept in {result.seconds:.1f} s "
          f"({result.frames_in / max(result.seconds, 1e-9):.0f} frames/s); wrote {result.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
