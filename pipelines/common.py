"""What every pipeline shares: flags generated from frozen dataclasses, and joining Ray.

Pipelines put their own folder on sys.path and `import common`.
"""

from __future__ import annotations

import argparse
import os

from syvla.cli import add_dataclass_args, apply_overrides


def parse_configs(argv, description: str, *bases):
    """One --flag per field of each base config (nested ones as --a.b); returns the overridden configs.

    Bad values end the program with an argparse error naming the field.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for base in bases:
        add_dataclass_args(parser, type(base), defaults=base)
    args = parser.parse_args(argv)
    try:
        out = tuple(apply_overrides(base, args) for base in bases)
    except (ValueError, KeyError) as e:
        parser.error(str(e))
    return out if len(out) > 1 else out[0]


def connect_ray(address: str = "", num_cpus: int | None = None):
    """Join `address` or $RAY_ADDRESS (set by `ray job submit`), else start a new local instance."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS", "")
        if address:
            ray.init(address=address)
        else:
            # address="local": a new instance even when another cluster runs on this machine.
            ray.init(address="local", num_cpus=num_cpus or None, include_dashboard=False)
    return ray
