"""The sim VQA set: answers follow the state by the documented thresholds, files round-trip through the
LLaVA reader, foreign folders are refused, and the scorer counts exact matches pair by pair."""

import json

import numpy as np
import pytest

from syvla.sim import vqa


def state(hand=(0.0, 0.6, 0.2), grip=1.0, obj=(0.0, 0.6, 0.02)):
    s = np.zeros(39)
    s[0:3], s[3], s[4:7] = hand, grip, obj
    return s


def test_answers_follow_the_state_and_skip_the_ambiguous_band():
    first = state()
    assert vqa.answers("push-v3", state(grip=1.0, obj=(0.05, 0.6, 0.02)), first) == {
        "task": "push", "gripper": "open", "side": "right"}
    got = vqa.answers("push-v3", state(grip=0.75, obj=(-0.01, 0.6, 0.02)), first)
    assert got == {"task": "push"}  # gripper between 0.6 and 0.9, object within 3 cm in x: not asked
    assert vqa.answers("pick-place-v3", state(grip=0.45, hand=(0.0, 0.6, 0.06), obj=(0.0, 0.6, 0.05)),
                       first)["holding"] == "yes"
    assert vqa.answers("pick-place-v3", state(grip=0.45, hand=(0.0, 0.6, 0.04), obj=(0.0, 0.6, 0.03)),
                       first).get("holding") is None  # closed and near but lifted only 1 cm
    drawer0 = state(obj=(0.0, 0.7, 0.1))
    assert vqa.answers("drawer-open-v3", state(obj=(0.0, 0.62, 0.1)), drawer0)["drawer"] == "yes"
    assert vqa.answers("drawer-open-v3", drawer0, drawer0)["drawer"] == "no"
    assert "drawer" not in vqa.answers("drawer-open-v3", state(obj=(0.0, 0.68, 0.1)), drawer0)
    assert "door" not in vqa.answers("drawer-open-v3", drawer0, drawer0)
    assert vqa.normalize_answer("  Open. ") == "open"


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="overlap"):
        vqa.SimVQAConfig(seed=10, heldout_seed=12, episodes_per_task=4)
    with pytest.raises(ValueError, match="frames_per_episode"):
        vqa.SimVQAConfig(frames_per_episode=0)
    with pytest.raises(ValueError, match="not-a-task"):
        vqa.SimVQAConfig(tasks=("not-a-task",))


def test_make_vqa_writes_llava_json_that_the_reader_takes(tmp_path):
    from syvla.data.llava import read_llava

    out = tmp_path / "vqa"
    cfg = vqa.SimVQAConfig(output=str(out), tasks=("drawer-open-v3",), episodes_per_task=1,
                           heldout_episodes_per_task=1, frames_per_episode=3, image_size=32)
    report = vqa.make_vqa(cfg, log=lambda line: None)
    train = json.loads((out / "train.json").read_text())
    assert report["train_samples"] == len(train) > 0 and report["origin"] == vqa.ORIGIN
    # The first frame: drawer closed, gripper open (the expert starts open), task named.
    first = [s for s in train if s["id"].endswith("-000-drawer")]
    assert first and first[0]["conversations"][1]["value"] == "no"
    assert {s["kind"] for s in train} >= {"task", "gripper", "drawer"}
    rows = [r for t in read_llava(out / "train.json") for r in t.to_pylist()]
    assert len(rows) == len(train) and rows[0]["images"][0][:4] == b"\x89PNG"
    heldout = json.loads((out / "heldout.json").read_text())
    assert not {s["image"] for s in heldout} & {s["image"] for s in train}
    # A second run into the same folder is allowed (ours); a foreign folder is refused.
    vqa.check_output(out)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="did not write"):
        vqa.make_vqa(vqa.SimVQAConfig(output=str(foreign)), log=lambda line: None)
    assert (foreign / "notes.txt").read_text() == "keep"


def test_score_counts_exact_matches_per_question(tmp_path):
    from syvla.data import images

    samples = []
    for i, (q, a) in enumerate([("gripper", "open"), ("gripper", "closed"), ("task", "push")]):
        name = f"img{i}.png"
        (tmp_path / name).write_bytes(images.encode_png(np.full((8, 8, 3), 40 * i, np.uint8)))
        samples.append({"id": f"s{i}", "image": name, "kind": q,
                        "conversations": [{"from": "human", "value": "<image>\n" + vqa.QUESTIONS[q]},
                                          {"from": "gpt", "value": a}]})
    (tmp_path / "heldout.json").write_text(json.dumps(samples))

    class ByShade:  # answers from the image itself: shade 0 -> "Open.", 40 -> "open", 80 -> "push"
        def answer(self, pics, questions, max_new_tokens=8):
            return [{0: "Open.", 40: "open", 80: "push"}[int(p[0, 0, 0])] for p in pics]

    r = vqa.score(ByShade(), tmp_path / "heldout.json", batch_size=2)
    assert r["hits"] == [True, False, True]
    assert r["accuracy"]["successes"] == 2 and r["accuracy"]["n"] == 3
    assert r["per_kind"] == {"gripper": {"n": 2, "correct": 1}, "task": {"n": 1, "correct": 1}}


def test_debug_policy_answers_with_text(tmp_path):
    from syvla.model.policy import Policy, make_debug_checkpoint
    from syvla.sim import metaworld as mw

    policy = Policy.load(make_debug_checkpoint(tmp_path / "c", embodiments=(mw.EMBODIMENT,)))
    pics = [np.zeros((64, 64, 3), np.uint8), np.full((32, 32, 3), 200, np.uint8)]
    got = policy.answer(pics, [vqa.QUESTIONS["gripper"], vqa.QUESTIONS["task"]], max_new_tokens=4)
    assert len(got) == 2 and all(isinstance(g, str) for g in got)
    alone = policy.answer(pics[:1], [vqa.QUESTIONS["gripper"]], max_new_tokens=4)
    assert alone[0] == got[0]  # left padding: a batch answers as each question alone
    with pytest.raises(ValueError, match="one image per question"):
        policy.answer(pics, ["one question"])
