"""Training the RL retriever's CLIP encoder on an imitation set (syvla.rl.retriever_training,
pipelines/train_retriever.py): the losses on hand-computed values, a real run on a tiny two-task Meta-World
dataset collected with the project's collector, the checkpoint's round trip into RL's clip_encoder, and
the refusals (foreign output files, config errors) that come before any training."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from syvla.rl import retriever_training as rt
from syvla.rl.guidance import clip_encoder
from syvla.rl.retrieval import ClipImageEncoder

PIPELINES = Path(__file__).parents[2] / "pipelines"
TASKS = "reach-v3,drawer-open-v3"


def _load_pipeline(name):
    spec = importlib.util.spec_from_file_location(f"{name}_pipeline", PIPELINES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------- losses


def test_text_infonce_matches_hand_computed_values():
    # one view, 3 frames (tasks 0, 0, 1), 2 instructions; embeddings on the unit circle
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    img = torch.stack([e0, e0, e1])[None]  # [V=1, M=3, D=2]
    txt = torch.stack([e0, e1])
    task = torch.tensor([0, 0, 1])
    s = 2.0
    # image -> text: each frame's cosine is 1 with its instruction, 0 with the other: CE = log(1 + e^-s)
    i2t = math.log(1 + math.exp(-s))
    # text -> image: text 0 sees logits (s, s, 0) and has 2 positives; text 1 sees (0, 0, s), 1 positive
    lse0 = math.log(2 * math.exp(s) + 1)
    lse1 = math.log(2 + math.exp(s))
    t2i = ((lse0 - s) + (lse1 - s)) / 2
    got = rt.text_infonce(img, txt, task, torch.tensor(s))
    assert got.item() == pytest.approx(0.5 * (i2t + t2i), rel=1e-6)


def test_phase_infonce_matches_hand_computed_values():
    # B = 2 pairs, one view: anchors at rows 0, 1, their positives at rows 2, 3
    # rows 0, 2: episode 0, frames 0 and 2; rows 1, 3: episode 1, frames 10 and 11
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])[None]
    episode = torch.tensor([0, 1, 0, 1])
    t = torch.tensor([0, 10, 2, 11])
    s = 3.0
    sim = (z[0] @ z[0].T * s).numpy()

    def nll(i, pos, allowed):
        return -(sim[i, pos] - np.log(np.exp(sim[i, allowed]).sum()))

    # window 3: every frame's only same-episode neighbour is its partner, so all others are negatives
    want = np.mean([nll(0, 2, [1, 2, 3]), nll(1, 3, [0, 2, 3]), nll(2, 0, [0, 1, 3]), nll(3, 1, [0, 1, 2])])
    got = rt.phase_infonce(z, episode, t, window=3, scale=torch.tensor(s))
    assert got.item() == pytest.approx(want, rel=1e-6)
    # both pairs from episode 0 (frames 0, 2 and 1, 4): frames within 3 of a frame are left out of its
    # softmax, farther ones (0 vs 4) stay negatives
    episode2, t2 = torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 2, 4])
    want2 = np.mean([nll(0, 2, [2, 3]), nll(1, 3, [3]), nll(2, 0, [0]), nll(3, 1, [0, 1])])
    got2 = rt.phase_infonce(z, episode2, t2, window=3, scale=torch.tensor(s))
    assert got2.item() == pytest.approx(want2, rel=1e-6)
    # cross-episode positives: same task, normalized times 0.50 vs 0.52 -> rows 0 and 1 are positives too
    task, phase = torch.tensor([0, 0, 0, 0]), torch.tensor([0.5, 0.52, 0.9, 0.1])
    want3 = np.mean([(nll(0, 2, [1, 2, 3]) + nll(0, 1, [1, 2, 3])) / 2,
                     (nll(1, 3, [0, 2, 3]) + nll(1, 0, [0, 2, 3])) / 2,
                     nll(2, 0, [0, 1, 3]), nll(3, 1, [0, 1, 2])])
    got3 = rt.phase_infonce(z, episode, t, window=3, scale=torch.tensor(s), task=task, phase=phase,
                            cross_episode_tol=0.05)
    assert got3.item() == pytest.approx(want3, rel=1e-6)


# ---------------------------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def tiny_metaworld(tmp_path_factory):
    """2 tasks x 3 expert episodes of <= 40 frames at 32 px, written by the project's collector (no Ray)."""
    from syvla.sim.collect import CollectSimConfig, collect_local

    out = tmp_path_factory.mktemp("retriever") / "metaworld"
    cfg = CollectSimConfig(tasks=TASKS, episodes_per_task=3, image_size=32, max_steps=40, cot_fraction=0.0,
                           output=str(out))
    return collect_local(cfg, log=lambda line: None)


def _cfg(data, output, **kw):
    base = dict(data=str(data), tasks=TASKS, output=str(output), steps=30, batch_size=16, log_every=10, eval_k=2,
                heldout_fraction=0.34, seed=0)
    base.update(kw)
    return rt.RetrieverTrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tiny_metaworld, tmp_path_factory):
    """30 steps of 16 pairs. One thread, as conftest's one_thread (a function fixture, set up after this one):
    on a shared CPU, spinning OpenMP threads made this ~10x slower."""
    out = tmp_path_factory.mktemp("retriever_out") / "clip.pt"
    lines = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = rt.train_retriever(_cfg(tiny_metaworld, out), log=lines.append)
    finally:
        torch.set_num_threads(threads)
    return result, lines


def test_training_lowers_the_loss_and_beats_random_retrieval(trained):
    result, lines = trained
    assert result.eval_loss_after < result.eval_loss_before - 0.5  # recorded 5.44 -> 4.15 (seeds 1, 2: -2.7, -2.2)
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])
    q = result.quality
    assert list(q) == ["trained", "untrained", "random"] and q["trained"]["k"] == 2
    # held-out frames (1 episode per task) from an index of the 4 training episodes; random is ~0.5.
    # Recorded (trained vs random): seed 0 1.000 vs 0.487, seed 1 1.000 vs 0.537, seed 2 0.775 vs 0.525
    assert q["trained"]["precision_at_k"] >= q["random"]["precision_at_k"] + 0.2
    assert q["trained"]["phase_error"] < q["random"]["phase_error"]
    progress = [line for line in lines if " step " in line]
    assert [line.split(":")[0].split()[-1] for line in progress] == ["10/30", "20/30", "30/30"]
    assert len(set(progress)) == len(progress)
    table = rt.format_quality(q)
    assert "precision@2" in table and len(table.splitlines()) == 4


def test_checkpoint_round_trips_into_rl_clip_encoder(trained):
    result, _ = trained
    images = torch.rand(3, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    want = ClipImageEncoder.from_clip(result.model)(images)
    for enc in (clip_encoder("debug", str(result.checkpoint)),
                ClipImageEncoder.from_pretrained("debug", str(result.checkpoint))):
        torch.testing.assert_close(enc(images), want, atol=1e-6, rtol=0)
    assert not torch.allclose(clip_encoder("debug", "", seed=0)(images), want, atol=1e-3)  # it did train
    report = json.loads(result.report.read_text())
    assert report["written_by"] == rt.WRITTEN_BY and report["config"]["tasks"] == TASKS
    assert report["data"]["train_episodes"] == 4 and report["data"]["heldout_episodes"] == 2
    assert report["quality"]["trained"] == pytest.approx(result.quality["trained"], nan_ok=True)
    assert rt.written_by_this_tool(result.checkpoint)
    # RL's flags carry it to clip_encoder
    rl = _load_pipeline("rl")
    cfg, _, _ = rl.parse(["--clip_model", "debug", "--clip_checkpoint", str(result.checkpoint)])
    torch.testing.assert_close(clip_encoder(cfg.clip_model, cfg.clip_checkpoint, cfg.device, cfg.seed)(images), want,
                               atol=1e-6, rtol=0)


def test_refuses_to_write_over_files_it_did_not_write(trained, tiny_metaworld, tmp_path, monkeypatch):
    result, _ = trained
    rt.check_output(result.checkpoint)  # its own files: replaced on a re-run
    foreign = tmp_path / "mine.pt"
    foreign.write_bytes(b"someone's weights")

    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(rt, "build_clip", no_training)
    monkeypatch.setattr(rt.ExpertSet, "load", no_training)
    with pytest.raises(FileExistsError, match=f"{foreign}.*not written by"):
        rt.train_retriever(_cfg(tiny_metaworld, foreign))
    assert foreign.read_bytes() == b"someone's weights"
    (tmp_path / "notes.json").write_text("{}")  # a foreign report name next to a fresh checkpoint path
    with pytest.raises(FileExistsError, match="notes.json"):
        rt.check_output(tmp_path / "notes.pt")
    rt.check_output(foreign, overwrite=True)  # the explicit flag allows it
    # a checkpoint replaced after the report was written is no longer this tool's
    copy = tmp_path / "copy.pt"
    copy.write_bytes(result.checkpoint.read_bytes() + b"x")
    rt.report_path(copy).write_text(result.report.read_text())
    with pytest.raises(FileExistsError, match="copy.pt"):
        rt.check_output(copy)
    with pytest.raises(SystemExit, match="not written by"):  # the command line says so too, before any work
        _load_pipeline("train_retriever").main(["--data", str(tiny_metaworld), "--output", str(foreign)])


def test_config_errors_come_before_any_training(tiny_metaworld, tmp_path, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(rt, "build_clip", no_training)
    monkeypatch.setattr(rt.ExpertSet, "load", no_training)
    out = tmp_path / "clip.pt"
    with pytest.raises(FileNotFoundError, match="RetrieverTrainConfig.data.*does not exist"):
        rt.train_retriever(_cfg(tmp_path / "missing", out))
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['push-v3'\]"):
        rt.train_retriever(_cfg(tiny_metaworld, out, tasks="reach-v3,push-v3"))
    with pytest.raises(ValueError, match="view_weights.*3 cameras"):
        rt.train_retriever(_cfg(tiny_metaworld, out, view_weights=(0.5, 0.5)))
    with pytest.raises(ValueError, match="clip_model 'ViT-Q-99'"):
        rt.train_retriever(_cfg(tiny_metaworld, out, clip_model="ViT-Q-99"))
    with pytest.raises(FileNotFoundError, match="clip_checkpoint"):
        rt.train_retriever(_cfg(tiny_metaworld, out, clip_checkpoint=str(tmp_path / "none.pt")))
    for bad, match in ((dict(steps=0), "steps"), (dict(lr=-1.0), "lr"), (dict(batch_size=1), "batch_size"),
                       (dict(heldout_fraction=1.0), "heldout_fraction"), (dict(text_weight=0.0, phase_weight=0.0),
                                                                          "both 0"),
                       (dict(output=str(tmp_path / "clip.json")), "report"), (dict(device="tpu"), "device")):
        with pytest.raises(ValueError, match=f"RetrieverTrainConfig.*{match}"):
            _cfg(tiny_metaworld, **{"output": out, **bad})
    assert not out.exists()
    with pytest.raises(SystemExit):  # the command line: an argparse error naming the field
        _load_pipeline("train_retriever").parse_config(["--steps", "0"])
