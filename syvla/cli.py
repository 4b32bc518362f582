"""argparse generated from frozen dataclasses: every scalar field becomes `--dotted.name`.

    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, TrainConfig)          # --optim.peak_lr, --model.expert.width, ...
    args = parser.parse_args()
    cfg = apply_overrides(preset_cfg, args)           # only the flags given on the command line

Supported field types: int, float, str, bool (`true/false/1/0/yes/no`), tuples of
int/float/str (space-separated values) and nested dataclasses (recursed with a
dotted prefix). Fields of other types (e.g. a tuple of dataclasses) are not
exposed on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

_SEP = "."


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _fields(cls) -> list[tuple[str, Any, dataclasses.Field]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], f) for f in dataclasses.fields(cls)]


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _tuple_item(tp):
    """Element type of tuple[X, ...] / tuple[X, X] when X is a scalar; None otherwise."""
    if typing.get_origin(tp) is not tuple:
        return None
    args = [a for a in typing.get_args(tp) if a is not Ellipsis]
    if args and all(a is args[0] for a in args) and args[0] in (int, float, str):
        return args[0]
    return None


def add_dataclass_args(parser: argparse.ArgumentParser, cls, prefix: str = "", defaults=None) -> None:
    """Add one optional flag per scalar field of `cls` (recursing into nested dataclasses).

    Defaults are suppressed: only flags present on the command line reach the namespace.
    `defaults` (an instance of cls) puts each field's value into its help text.
    """
    for name, tp, field in _fields(cls):
        dest = f"{prefix}{name}"
        help_text = field.metadata.get("help", "")
        if defaults is not None and not _is_dataclass_type(tp):
            help_text = f"{help_text} (default: {getattr(defaults, name)!r})".strip()
        help_text = help_text.replace("%", "%%")  # argparse %-formats help text
        if _is_dataclass_type(tp):
            add_dataclass_args(parser, tp, dest + _SEP, None if defaults is None else getattr(defaults, name))
        elif tp is bool:
            parser.add_argument(f"--{dest}", dest=dest, type=_bool, default=argparse.SUPPRESS, metavar="BOOL", help=help_text)
        elif tp in (int, float, str):
            parser.add_argument(f"--{dest}", dest=dest, type=tp, default=argparse.SUPPRESS, help=help_text)
        elif (item := _tuple_item(tp)) is not None:
            parser.add_argument(f"--{dest}", dest=dest, type=item, nargs="*", default=argparse.SUPPRESS, help=help_text)


def apply_overrides(cfg, overrides: argparse.Namespace | dict[str, Any]):
    """Return a copy of the frozen dataclass `cfg` with dotted-name overrides applied (validated again)."""
    flat = dict(vars(overrides) if isinstance(overrides, argparse.Namespace) else overrides)
    return _apply(cfg, flat, "")


def _apply(cfg, flat: dict[str, Any], prefix: str):
    changes = {}
    for name, tp, _ in _fields(type(cfg)):
        dest = f"{prefix}{name}"
        if _is_dataclass_type(tp):
            if any(k.startswith(dest + _SEP) for k in flat):
                changes[name] = _apply(getattr(cfg, name), flat, dest + _SEP)
        elif dest in flat:
            value = flat[dest]
            changes[name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(cfg, **changes) if changes else cfg


def to_flat_dict(cfg, prefix: str = "") -> dict[str, Any]:
    """{dotted.name: value} of every field (for logging a run's full configuration)."""
    out = {}
    for name, tp, _ in _fields(type(cfg)):
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(to_flat_dict(value, f"{prefix}{name}{_SEP}"))
        else:
            out[f"{prefix}{name}"] = value
    return out
