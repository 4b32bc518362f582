"""What every pipeline shares: joining Ray, the one way (flags come from `syvla.cli.parse_configs`).

Pipelines put their own folder on sys.path and `import common`.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from syvla.cli import field


@dataclasses.dataclass(frozen=True)
class RayConfig:
    """Which Ray cluster a pipeline joins (`--address`, `--num_cpus`)."""

    address: str = field("", "Ray cluster to join (e.g. 10.0.0.1:6379); '' = $RAY_ADDRESS (set by `ray job submit`) "
                             "when set, else a new local instance")
    num_cpus: int = field(0, "CPUs of a new local instance; 0 = all of this machine's")

    def __post_init__(self):
        if self.num_cpus < 0:
            raise ValueError(f"RayConfig.num_cpus must be >= 0, got {self.num_cpus}")


def connect_ray(address: str = "", num_cpus: int | None = None):
    """Join `address` or $RAY_ADDRESS (set by `ray job submit`), else start a new local instance.

    The only place that reads $RAY_ADDRESS and calls `ray.init` for a pipeline; a second call in the same
    process (pipelines/demo.py runs the others in-process) keeps the connection it has.
    """
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS", "")
        if address:
            ray.init(address=address)
        else:
            # address="local": a new instance even when another cluster runs on this machine.
            ray.init(address="local", num_cpus=num_cpus or None, include_dashboard=False)
    if not sys.stdout.isatty():  # a job log or a file: Ray Data's progress bars would be escape codes there
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
    return ray
