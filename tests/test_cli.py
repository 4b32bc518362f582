"""The command line and config files every pipeline shares (syvla.cli)."""

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from syvla.cli import coerce, dump_configs, field, from_dict, parse_configs, to_dict
from syvla.model.config import EmbodimentConfig
from syvla.train.config import PRESETS
from syvla.train.pipeline import DemoConfig

PIPELINES = sorted(p for p in (Path(__file__).resolve().parents[1] / "pipelines").glob("*.py") if p.name != "common.py")
ARM = {"name": "arm", "state_dim": 5, "action_dim": 7, "cameras": ["front", "wrist"], "vlm_camera": "wrist"}


@dataclasses.dataclass(frozen=True)
class Export:
    out: str = field("", "where the policy goes")


def parse(argv, given=None):
    return parse_configs(argv, "", Export(), ("demos", DemoConfig()), presets=PRESETS, preset="pretrain-debug",
                         given=given)


def test_config_file_round_trip_with_nested_and_tuple_of_dataclass_fields(tmp_path):
    cfg, export, demos = parse(["--preset", "finetune-debug", "--optim.peak_lr", "3e-4", "--optim.betas", "0.8", "0.9",
                                "--model.embodiments", json.dumps([ARM]), "--data.tasks", "a", "b", "--out", "x",
                                "--demos.collect", "false", "--model.decoupling.enabled", "false"])
    assert cfg.model.embodiments == (EmbodimentConfig("arm", 5, 7, ("front", "wrist"), "wrist"),)
    path = dump_configs(tmp_path / "run.yaml", cfg, export, ("demos", demos))
    again = parse(["--config", str(path)])
    assert again == (cfg, export, demos)
    assert cfg != PRESETS.build("finetune-debug") and demos != DemoConfig()  # the file carried real changes


def test_flags_win_over_the_file_and_given_holds_both(tmp_path):
    path = tmp_path / "my_robot.yaml"
    path.write_text("preset: finetune-debug\n"
                    "optim: {peak_lr: 3e-4, warmup_steps: 7}\n"  # YAML reads 3e-4 as a string; the field makes it a float
                    "model:\n  decoupling: {tau: 0.1}\n  embodiments:\n"
                    "    - {name: arm, state_dim: 5, action_dim: 7, cameras: [front, wrist]}\n"
                    "demos: {collect: false}\n")
    given = {}
    cfg, _, demos = parse(["--config", str(path), "--optim.peak_lr", "1e-3"], given)
    assert cfg.name == "finetune-debug"  # the file's preset
    assert (cfg.optim.peak_lr, cfg.optim.warmup_steps, cfg.model.decoupling.tau) == (1e-3, 7, 0.1)
    assert cfg.model.embodiments[0].cameras == ("front", "wrist") and demos.collect == "false"
    assert set(given) == {"optim.peak_lr", "optim.warmup_steps", "model.decoupling.tau", "model.embodiments",
                          "demos.collect"}
    assert parse(["--config", str(path), "--preset", "pretrain-debug"])[0].name == "pretrain-debug"  # the flag's


@pytest.mark.parametrize("text, expected", [
    ("optim: {peak_rl: 1}", "unknown field 'optim.peak_rl'"),
    ("optim: {peak_lr: fast}", "optim.peak_lr: expected a number"),
    ("optim: 3", "optim is a group of fields"),
    ("max_steps: 2.5", "max_steps: expected an integer"),
    ("model: {embodiments: [{name: arm, action_dim: 7, cameras: [f]}]}", "model.embodiments\\[0\\].*state_dim"),
    ("model: {embodiments: [{name: arm, state_dim: 5, action_dim: 7, cameras: [f], arms: 2}]}",
     "model.embodiments\\[0\\]: unknown field.*arms"),
    ("demos: {tasks: [a, b]}", "demos.tasks: expected a string"),
    ("preset: nope", "unknown training preset 'nope'"),
    ("- a\n- b", "expected a mapping"),
    ("optim: {peak_lr: [1", "not YAML/JSON"),
])
def test_bad_config_files_name_the_file_and_field(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit):
        parse(["--config", str(path)])
    err = " ".join(capsys.readouterr().err.split())
    assert str(path) in err
    assert __import__("re").search(expected, err), err


def test_missing_config_file_and_bad_yaml_flag(capsys):
    with pytest.raises(SystemExit):
        parse(["--config", "/nonexistent/my_robot.yaml"])
    assert "/nonexistent/my_robot.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--model.embodiments", "[{name: arm}]"])
    assert "--model.embodiments[0]" in capsys.readouterr().err


def test_coerce_is_strict():
    assert coerce(float, 3, "x") == 3.0 and coerce(float, "3e-5", "x") == 3e-5
    assert coerce(bool, "no", "x") is False and coerce(str, False, "x") == "false"
    for tp, value in [(int, True), (int, "3"), (bool, 1), (str, 3), (tuple[str, ...], "ab"), (tuple[int, ...], [1, "a"])]:
        with pytest.raises(ValueError, match="^where(\\[1\\])?: expected"):
            coerce(tp, value, "where")
    arm = from_dict(EmbodimentConfig, ARM)
    assert to_dict(arm) == ARM and from_dict(EmbodimentConfig, to_dict(arm)) == arm
    with pytest.raises(ValueError, match="vlm_camera 'top' is not one of"):  # the class still validates
        from_dict(EmbodimentConfig, {**ARM, "vlm_camera": "top"})


def test_every_field_needs_help_and_a_command_line_form():
    @dataclasses.dataclass(frozen=True)
    class Bare:
        x: int = 1  # no help text

    @dataclasses.dataclass(frozen=True)
    class Odd:
        table: dict = field(default_factory=dict, help="a mapping")

    for cls, expected in [(Bare, "Bare.x \\(--x\\) has no help text"), (Odd, "Odd.table .* no command-line form")]:
        with pytest.raises(ValueError, match=expected):
            parse_configs([], "", cls())


@pytest.mark.parametrize("script", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_flag_has_help_text(script, monkeypatch, capsys):
    """`--help` of every pipeline builds (a config field without help would raise) and every
    option, dataclass-made or hand-written, has a description."""
    seen = []
    add = argparse.ArgumentParser.add_argument

    def recording(self, *args, **kwargs):
        action = add(self, *args, **kwargs)
        seen.append(action)
        return action

    monkeypatch.setattr(argparse.ArgumentParser, "add_argument", recording)
    spec = importlib.util.spec_from_file_location(f"pipeline_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    options = [a for a in seen if a.option_strings and a.option_strings[0] not in ("-h", "--help")]
    assert len(options) >= 2, script.name
    missing = [a.option_strings[0] for a in options if not (a.help or "").split("(default:")[0].strip()]
    assert not missing, f"{script.name}: options without help text: {missing}"
    assert all(a.option_strings[0] in out for a in options)


def test_a_ray_job_copy_resolves_relative_paths_under_the_output_dir(tmp_path, monkeypatch, capsys):
    """In Ray's temporary working_dir copy, parse_configs moves to $SYVLA_OUTPUT_DIR (relative outputs outlive the
    job) and still reads a relative --config from the copy; anywhere else nothing changes."""
    from syvla.cli import in_job_copy

    copy = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    copy.mkdir(parents=True)
    (copy / "job.yaml").write_text("out: checkpoints/mine\n")
    out_root = tmp_path / "outputs"
    assert in_job_copy(copy) and not in_job_copy(tmp_path) and not in_job_copy(tmp_path / "runtime_resources")
    monkeypatch.setenv("SYVLA_OUTPUT_DIR", str(out_root))
    monkeypatch.chdir(tmp_path)
    parse([])
    assert Path.cwd() == tmp_path and capsys.readouterr().out == ""  # not in a copy: no move, no message
    monkeypatch.chdir(copy)
    export = parse(["--config", "job.yaml"])[1]
    assert export.out == "checkpoints/mine" and Path.cwd() == out_root.resolve()
    assert f"relative paths resolve under {out_root.resolve()}" in capsys.readouterr().out
