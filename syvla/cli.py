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
int/float/str (space-separated values), nested dataclasses (recursed with a dotted
prefix) and tuples of dataclasses (one flag whose value is a YAML/JSON list of
mappings, e.g. `--model.embodiments '[{name: arm, state_dim: 7, ...}]'`). A field of
any other type, or one without help text, is an error when the parser is built.

`--config FILE.yaml` reads the same fields from a file (flags given as well win):

    preset: finetune-debug          # optional; --preset wins
    init_from: checkpoints/pretrain/pretrain-debug
    optim: {peak_lr: 3.0e-5}
    model:
      decoupling: {tau: 0.1}
    demos: {collect: "false"}       # a prefixed config is a mapping under its prefix

`dump_configs(path, *configs)` writes every field of resolved configs in that shape, so
`--config` of a saved file rebuilds the run's configuration exactly.

Inside a Ray job submitted with a `working_dir`, the job starts in Ray's temporary copy of it,
which goes when the job ends. `parse_configs` then moves the process to `$SYVLA_OUTPUT_DIR`
(default `~/syvla`) and says so: relative paths (data, runs, checkpoints) resolve there and
outlive the job; `--config FILE` is still read from the copy (`enter_job_output_dir`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

_SEP = "."
OUTPUT_DIR_ENV = "SYVLA_OUTPUT_DIR"  # where relative paths of a Ray job resolve (cluster: shared storage)
DEFAULT_JOB_OUTPUT_DIR = "~/syvla"


def in_job_copy(path: str | Path) -> bool:
    """Whether `path` lies in a Ray job's temporary copy of its working_dir (runtime_resources/working_dir_files)."""
    parts = Path(path).resolve().parts
    return any(a == "runtime_resources" and b.startswith("working_dir_files") for a, b in zip(parts, parts[1:]))


def _say(message: str) -> None:
    print(message, flush=True)


def enter_job_output_dir(log: Callable[[str], None] = _say) -> Path | None:
    """In a Ray job's temporary working-dir copy, chdir to `$SYVLA_OUTPUT_DIR` (default ~/syvla, made if
    missing) so relative outputs outlive the job; return the copy's path, else None (nothing changes)."""
    copy = Path.cwd()
    if not in_job_copy(copy):
        return None
    root = Path(os.environ.get(OUTPUT_DIR_ENV) or DEFAULT_JOB_OUTPUT_DIR).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)
    log(f"[syvla] this Ray job runs in a temporary copy of its working_dir ({copy}), deleted after the job: "
        f"relative paths resolve under {root} instead (${OUTPUT_DIR_ENV}; shared storage on a cluster)")
    return copy


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
    """Element type of tuple[X, ...] / tuple[X, X] when X is a scalar; None otherwise.

    A fixed length is the dataclass's to check (its __post_init__), so its error names the field."""
    if typing.get_origin(tp) is not tuple:
        return None
    args = [a for a in typing.get_args(tp) if a is not Ellipsis]
    if args and all(a is args[0] for a in args) and args[0] in (int, float, str):
        return args[0]
    return None


def _tuple_dataclass(tp):
    """Item class of tuple[SomeDataclass, ...]; None otherwise."""
    if typing.get_origin(tp) is not tuple:
        return None
    args = [a for a in typing.get_args(tp) if a is not Ellipsis]
    return args[0] if len(args) == 1 and _is_dataclass_type(args[0]) else None


def _yaml_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"not YAML/JSON: {e}") from None


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def coerce(tp, value, where: str):
    """`value` (parsed YAML/JSON) as a value of field type `tp`; ValueError naming `where` otherwise."""
    def bad(expected: str):
        return ValueError(f"{where}: expected {expected}, got {value!r}")

    if _is_dataclass_type(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise bad(f"a mapping of {tp.__name__} fields")
        return from_dict(tp, value, where)
    if (item := _tuple_dataclass(tp)) is not None or (item := _tuple_item(tp)) is not None:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise bad(f"a list of {_type_name(item)}")
        return tuple(coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return _bool(value)
            except argparse.ArgumentTypeError:
                pass
        raise bad("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # YAML reads unquoted true/false/yes/no as booleans
            return "true" if value else "false"
        raise bad("a string")
    raise ValueError(f"{where}: field type {_type_name(tp)} cannot be read from a config")


def from_dict(cls, data: Mapping, where: str = ""):
    """Build dataclass `cls` from a mapping of its fields (nested mappings for nested dataclasses).

    Unknown keys and missing required fields are errors naming them; the class validates the rest.
    """
    where = where or cls.__name__
    fields = {name: tp for name, tp, _ in _fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; {cls.__name__} has {sorted(fields)}")
    kwargs = {k: coerce(fields[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ValueError(f"{where}: {e}") from None


def to_dict(cfg) -> dict[str, Any]:
    """Every field of the dataclass `cfg` as plain YAML/JSON values (nested dicts and lists)."""
    def plain(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return to_dict(value)
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return {name: plain(getattr(cfg, name)) for name, _, _ in _fields(type(cfg))}


def _help(cls, name: str, field: dataclasses.Field, dest: str) -> str:
    text = field.metadata.get("help", "")
    if not text:
        raise ValueError(f"config field {cls.__name__}.{name} (--{dest}) has no help text: declare it with "
                         f"syvla.cli.field(default, help)")
    return text


def add_dataclass_args(parser: argparse.ArgumentParser, cls, prefix: str = "", defaults=None) -> None:
    """Add one optional flag per scalar field of `cls` (recursing into nested dataclasses).

    Defaults are suppressed: only flags present on the command line reach the namespace.
    `defaults` (an instance of cls) puts each field's value into its help text.
    """
    for name, tp, field in _fields(cls):
        dest = f"{prefix}{name}"
        help_text = _help(cls, name, field, dest)
        if _is_dataclass_type(tp):
            add_dataclass_args(parser, tp, dest + _SEP, None if defaults is None else getattr(defaults, name))
            continue
        item_cls = _tuple_dataclass(tp)
        if item_cls is not None:
            item_fields = [f"{n} ({_help(item_cls, n, f, dest + '[].' + n)})" for n, _, f in _fields(item_cls)]
            help_text = f"{help_text}; a YAML/JSON list of {{{', '.join(item_fields)}}}"
        if defaults is not None:
            shown = getattr(defaults, name)
            if item_cls is not None:  # as YAML would spell it
                shown = [to_dict(item) for item in shown]
            help_text = f"{help_text} (default: {shown!r})"
        help_text = help_text.replace("%", "%%")  # argparse %-formats help text
        if tp is bool:
            parser.add_argument(f"--{dest}", dest=dest, type=_bool, default=argparse.SUPPRESS, metavar="BOOL", help=help_text)
        elif tp in (int, float, str):
            parser.add_argument(f"--{dest}", dest=dest, type=tp, default=argparse.SUPPRESS, help=help_text)
        elif (item := _tuple_item(tp)) is not None:
            parser.add_argument(f"--{dest}", dest=dest, type=item, nargs="*", default=argparse.SUPPRESS, help=help_text)
        elif item_cls is not None:
            parser.add_argument(f"--{dest}", dest=dest, type=_yaml_value, metavar="YAML", default=argparse.SUPPRESS,
                                help=help_text)
        else:
            raise ValueError(f"config field {cls.__name__}.{name} (--{dest}) has type {_type_name(tp)}, "
                             f"which has no command-line form")


def parse_configs(argv: Sequence[str] | None, description: str, *configs, presets: Presets | None = None,
                  preset: str = "", given: dict | None = None):
    """Parse one flag per field of each config; return the configs with the given values applied.

    `configs`: dataclass instances (flags `--field`, `--nested.field`) or `(prefix, instance)` pairs
    (flags `--prefix.field`). With `presets`, `--preset NAME` (default `preset`) builds one more config,
    returned first, whose fields take flags without a prefix. `--config FILE` (YAML or JSON) sets
    fields first, flags on top. Returns one config alone, else a tuple in that order. Bad values and
    unknown keys end the program with an argparse error naming the field (and the file).
    `given`, when passed, receives {dotted flag name: value} of exactly the fields the file and the
    command line set (so a caller can tell an explicit value from a default, e.g. `--model.*` on
    top of a checkpoint).
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default="", metavar="FILE",
                     help="YAML/JSON file of field values (nested mappings, as dump_configs writes them); "
                          "flags given as well win")
    if presets is not None:
        pre.add_argument("--preset", default=None, choices=sorted(presets),
                         help=f"named {presets.kind} preset; the config file and every flag below override "
                              f"its fields (default: {preset!r})")
    known, _ = pre.parse_known_args(argv)
    copy = enter_job_output_dir()
    if copy is not None and known.config and not Path(known.config).is_absolute():
        known.config = str(copy / known.config)  # a config file shipped with the working_dir
    document = _read_config_file(known.config, pre) if known.config else {}
    base = None
    if presets is not None:
        from_file = document.pop("preset", None)
        name = known.preset or from_file or preset
        if name not in presets:
            pre.error(f"--config {known.config}: unknown {presets.kind} preset {name!r}; choose from {sorted(presets)}")
        base = presets.build(name)
    elif "preset" in document:
        pre.error(f"--config {known.config}: this program has no presets (remove 'preset')")
    pairs = [("", base)] if base is not None else []
    pairs += [c if isinstance(c, tuple) else ("", c) for c in configs]
    parser = argparse.ArgumentParser(description=description, parents=[pre],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for prefix, cfg in pairs:
        add_dataclass_args(parser, type(cfg), prefix=f"{prefix}{_SEP}" if prefix else "", defaults=cfg)
    args = vars(parser.parse_args(argv))
    args.pop("preset", None)
    args.pop("config", None)
    schema = {}
    for prefix, cfg in pairs:
        schema.update(_schema(type(cfg), f"{prefix}{_SEP}" if prefix else ""))
    try:
        values = _flatten(document, schema, f"--config {known.config}")
        for dest, value in args.items():  # flags win; YAML-valued flags (tuples of dataclasses) are typed here
            values[dest] = coerce(schema[dest], value, f"--{dest}") if _tuple_dataclass(schema[dest]) else value
    except ValueError as e:
        parser.error(str(e))
    if given is not None:
        given.update(values)
    prefixed = tuple(f"{prefix}{_SEP}" for prefix, _ in pairs if prefix)
    try:
        out = []
        for prefix, cfg in pairs:
            if prefix:
                mine = {k[len(prefix) + 1:]: v for k, v in values.items() if k.startswith(f"{prefix}{_SEP}")}
            else:
                mine = {k: v for k, v in values.items() if not k.startswith(prefixed)}
            out.append(apply_overrides(cfg, mine))
    except (ValueError, KeyError) as e:
        parser.error(str(e.args[0] if isinstance(e, KeyError) and e.args else e))
    return out[0] if len(out) == 1 else tuple(out)


def _read_config_file(path: str, parser: argparse.ArgumentParser) -> dict:
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as e:
        parser.error(f"--config {path}: {e.strerror or e}")
    try:
        document = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as e:
        parser.error(f"--config {path}: not YAML/JSON: {e}")
    if document is None:
        return {}
    if not isinstance(document, dict):
        parser.error(f"--config {path}: expected a mapping of field names, got {type(document).__name__}")
    return document


def _schema(cls, prefix: str) -> dict[str, Any]:
    """{dotted name: type} of every leaf field (tuples of dataclasses are leaves)."""
    out = {}
    for name, tp, _ in _fields(cls):
        if _is_dataclass_type(tp):
            out.update(_schema(tp, f"{prefix}{name}{_SEP}"))
        else:
            out[f"{prefix}{name}"] = tp
    return out


def _flatten(document: Mapping, schema: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """A nested config document as {dotted name: typed value}; unknown keys are errors naming them."""
    out = {}
    for key, value in document.items():
        dest = f"{prefix}{key}"
        if dest in schema:
            out[dest] = coerce(schema[dest], value, f"{where}: {dest}")
        elif any(k.startswith(dest + _SEP) for k in schema):
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}: {dest} is a group of fields; expected a mapping, got {value!r}")
            out.update(_flatten(value, schema, where, dest + _SEP))
        else:
            siblings = sorted({k[len(prefix):].split(_SEP)[0] for k in schema if k.startswith(prefix)})
            raise ValueError(f"{where}: unknown field {dest!r}; known here: {siblings}")
    return out


def dump_configs(path: str | Path, *configs) -> Path:
    """Write every field of `configs` (as parse_configs takes them: instances or (prefix, instance))
    as one YAML document that `--config` reads back to the same configs."""
    import yaml

    document: dict[str, Any] = {}
    for c in configs:
        prefix, cfg = c if isinstance(c, tuple) else ("", c)
        fields = to_dict(cfg)
        if prefix:
            document[prefix] = fields
        else:
            document.update(fields)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=110))
    tmp.replace(path)
    return path


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
