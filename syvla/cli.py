"""Command lines generated from frozen dataclasses: every scalar field becomes `--dotted.name`.

    @dataclasses.dataclass(frozen=True)
    class OptimConfig:
        peak_lr: float = field(1e-4, "learning rate at the end of warm-up")   # the help text of --peak_lr

    PRESETS = Presets("training", {"pretrain-debug": pretrain_debug, ...})   # name -> builder
    cfg, demos = parse_configs(argv, __doc__, ("demos", DemoConfig()), presets=PRESETS, preset="pretrain-debug")

`parse_configs` is what every pipeline calls: `--preset NAME`, then one flag per field
of each config (`--optim.peak_lr`, `--demos.tasks`, ...), each with its help text and
default in `--help`. The lower-level pieces:

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

_SEP = "."


def field(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING):
    """A dataclass field with a one-line `help` (unit, shape, paper section) that `--help` shows with its default.

    Use `default_factory` for mutable defaults and nested config dataclasses.
    """
    if not help:
        raise ValueError("cli.field needs a help text")
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


class Presets(Mapping):
    """Named config builders of one kind (`Presets("training", {"pretrain-debug": pretrain_debug})`).

    `presets[name]` is the builder, `presets.build(name, **overrides)` its config; an unknown name
    raises KeyError("unknown training preset 'x'; choose from [...]").
    """

    def __init__(self, kind: str, builders: Mapping[str, Callable[..., Any]]):
        self.kind = kind
        self._builders = dict(builders)

    def __getitem__(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise KeyError(f"unknown {self.kind} preset {name!r}; choose from {sorted(self._builders)}")
        return self._builders[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)

    def build(self, name: str, **overrides):
        return self[name](**overrides)


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


def parse_configs(argv: Sequence[str] | None, description: str, *configs, presets: Presets | None = None,
                  preset: str = "", given: dict | None = None):
    """Parse one flag per field of each config; return the configs with the given flags applied.

    `configs`: dataclass instances (flags `--field`, `--nested.field`) or `(prefix, instance)` pairs
    (flags `--prefix.field`). With `presets`, `--preset NAME` (default `preset`) builds one more config,
    returned first, whose fields take flags without a prefix. Returns one config alone, else a tuple in
    that order. Bad values end the program with an argparse error naming the field.
    `given`, when passed, receives {dotted flag name: value} of exactly the flags on the command
    line (so a caller can tell an explicit flag from a default, e.g. `--model.*` on top of a checkpoint).
    """
    parents, base = [], None
    if presets is not None:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--preset", default=preset, choices=sorted(presets),
                         help=f"named {presets.kind} preset; every flag below overrides one of its fields "
                              f"(default: {preset!r})")
        known, _ = pre.parse_known_args(argv)
        parents, base = [pre], presets.build(known.preset)
    pairs = [("", base)] if base is not None else []
    pairs += [c if isinstance(c, tuple) else ("", c) for c in configs]
    parser = argparse.ArgumentParser(description=description, parents=parents,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for prefix, cfg in pairs:
        add_dataclass_args(parser, type(cfg), prefix=f"{prefix}{_SEP}" if prefix else "", defaults=cfg)
    args = vars(parser.parse_args(argv))
    args.pop("preset", None)
    if given is not None:
        given.update(args)
    prefixed = tuple(f"{prefix}{_SEP}" for prefix, _ in pairs if prefix)
    try:
        out = []
        for prefix, cfg in pairs:
            if prefix:
                mine = {k[len(prefix) + 1:]: v for k, v in args.items() if k.startswith(f"{prefix}{_SEP}")}
            else:
                mine = {k: v for k, v in args.items() if not k.startswith(prefixed)}
            out.append(apply_overrides(cfg, mine))
    except (ValueError, KeyError) as e:
        parser.error(str(e.args[0] if isinstance(e, KeyError) and e.args else e))
    return out[0] if len(out) == 1 else tuple(out)


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
