import argparse

import pytest

from syvla.cli import add_dataclass_args, apply_overrides, to_flat_dict
from syvla.train.config import PRESETS, TrainConfig, preset


def test_paper_presets_follow_table_7():
    pre, fine = preset("pretrain-paper"), preset("finetune-paper")
    assert (pre.global_batch_size, pre.optim.warmup_steps, pre.optim.peak_lr, pre.optim.decay_lr) == (512, 5000, 1e-4, 1e-5)
    assert (pre.optim.betas, pre.optim.eps, pre.optim.clip_grad_norm) == ((0.9, 0.999), 1e-8, 1.0)
    assert (fine.global_batch_size, fine.optim.warmup_steps, fine.optim.peak_lr, fine.optim.decay_lr) == (32, 1000, 3e-5, 3e-6)
    assert (fine.optim.betas, fine.optim.eps, fine.optim.clip_grad_norm) == ((0.9, 0.995), 1e-8, 1.0)
    assert (pre.data.multimodal_ratio, fine.data.multimodal_ratio) == (0.35, 0.30)
    assert pre.model.decoupling.enabled and fine.model.decoupling.enabled and pre.zero_stage == fine.zero_stage == 2
    assert pre.model.expert.width == 1408 and pre.model.num_query_tokens == 20
    for name in PRESETS:
        assert preset(name).name == name


def parse(argv, name="pretrain-debug"):
    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, TrainConfig)
    return apply_overrides(preset(name), parser.parse_args(argv))


def test_any_field_overridable_with_dotted_flags():
    cfg = parse(["--optim.peak_lr", "3e-4", "--optim.betas", "0.8", "0.9", "--model.expert.width", "128",
                 "--model.expert.vision.image_size", "64", "--data.tasks", "reach-v3", "push-v3",
                 "--scale.use_gpu", "false", "--scale.num_workers", "1", "--model.decoupling.enabled", "no", "--name", "x"])
    assert cfg.optim.peak_lr == 3e-4 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.model.expert.width == 128 and cfg.model.expert.vision.image_size == 64
    assert cfg.data.tasks == ("reach-v3", "push-v3") and cfg.scale.num_workers == 1
    assert cfg.model.decoupling.enabled is False and cfg.name == "x"
    untouched = preset("pretrain-debug")
    assert cfg.optim.decay_lr == untouched.optim.decay_lr and cfg.model.vlm == untouched.model.vlm
    flat = to_flat_dict(cfg)
    assert flat["optim.peak_lr"] == 3e-4 and flat["model.expert.vision.image_size"] == 64


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match="global_batch_size"):
        parse(["--global_batch_size", "33"])  # not divisible by 2 workers
    with pytest.raises(ValueError, match="betas"):
        parse(["--optim.betas", "0.9"])
    with pytest.raises(ValueError, match="stage"):
        parse(["--stage", "rl"])
    with pytest.raises(ValueError, match="width"):
        parse(["--model.expert.width", "90"])  # not divisible by 4 heads
    with pytest.raises(KeyError, match="preset"):
        preset("nope")


def test_micro_batch_and_storage():
    cfg = parse(["--global_batch_size", "32", "--grad_accum_steps", "2", "--storage_path", "runs"])
    assert cfg.micro_batch_size == 8
    assert cfg.storage_uri().startswith("/") and cfg.storage_uri().endswith("/runs")
    assert parse(["--storage_path", "s3://bucket/x"]).storage_uri() == "s3://bucket/x"


def test_pipeline_parser_presets_prefixes_and_help(capsys):
    import dataclasses

    from syvla.cli import Presets, field, parse_configs
    from syvla.train.pipeline import DemoConfig

    @dataclasses.dataclass(frozen=True)
    class Out:
        out: str = field("", "where the policy goes")

    cfg, out, demos = parse_configs(["--preset", "finetune-debug", "--max_steps", "7", "--out", "x",
                                     "--demos.tasks", "push-v3"], "", Out(), ("demos", DemoConfig()),
                                    presets=PRESETS, preset="pretrain-debug")
    assert (cfg.name, cfg.max_steps, out.out, demos.tasks) == ("finetune-debug", 7, "x", "push-v3")
    assert demos.episodes_per_task == DemoConfig().episodes_per_task
    with pytest.raises(SystemExit):
        parse_configs(["--global_batch_size", "33"], "", presets=PRESETS, preset="pretrain-debug")
    assert "global_batch_size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_configs(["--help"], "", ("demos", DemoConfig()), presets=PRESETS, preset="pretrain-debug")
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert "learning rate at the end of warm-up (Table 7" in text and "(default: 0.001)" in text  # the preset's
    assert "--demos.episodes_per_task" in text and "scripted expert episodes per task (default: 40)" in text
    with pytest.raises(KeyError, match="unknown colour preset 'x'; choose from \\['a'\\]"):
        Presets("colour", {"a": dict}).build("x")
    with pytest.raises(ValueError, match="help"):
        field(1)
