"""Each cleaning filter: plant the defect, see the episode dropped with its reason, clean episodes stay."""

import io
import json

import numpy as np
import pyarrow as pa
import pytest

from syvla import constants as K
from syvla.data import cleaning as C
from syvla.data.columns import list_column, vectors
from syvla.data.synthetic import synthetic_episode, synthetic_vqa

N = 40


def _set_vectors(t: pa.Table, column: str, x: np.ndarray) -> pa.Table:
    return t.set_column(t.schema.get_field_index(column), t.schema.field(column), list_column(np.asarray(x, np.float32)))


def _with(t: pa.Table, column: str, values: list) -> pa.Table:
    return t.set_column(t.schema.get_field_index(column), t.schema.field(column), pa.array(values, t.schema.field(column).type))


def _black_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _replace_image(t: pa.Table, frame: int, view: int, data: bytes) -> pa.Table:
    images = t.column(K.IMAGES).to_pylist()
    images[frame][view] = data
    return _with(t, K.IMAGES, images)


def _idle_stretch(t: pa.Table, start: int, stop: int) -> pa.Table:
    """Frames start..stop-1 repeat frame start's state and action (a frozen robot)."""
    s, a = vectors(t, K.STATE).copy(), vectors(t, K.ACTION).copy()
    s[start:stop], a[start:stop] = s[start], a[start]
    return _set_vectors(_set_vectors(t, K.STATE, s), K.ACTION, a)


def _clean(episodes, **cfg):
    out, report = C.clean_table(pa.concat_tables(episodes), C.CleaningConfig(**cfg))
    kept = sorted(set(out.column(K.EPISODE_ID).to_pylist()))
    return out, report, kept


def _dropped(report, reason, dataset="synthetic"):
    return report.datasets[dataset].dropped.get(reason, [])


def _planted(ep_id: int, defect) -> tuple[pa.Table, pa.Table]:
    return synthetic_episode(0, N), defect(synthetic_episode(ep_id, N))


@pytest.mark.parametrize(
    "reason, defect",
    [
        (C.NONFINITE, lambda t: _set_vectors(t, K.STATE, np.where(np.arange(N)[:, None] == 5, np.nan, vectors(t, K.STATE)))),
        (C.NONFINITE, lambda t: _set_vectors(t, K.ACTION, np.where(np.arange(N)[:, None] == 7, np.inf, vectors(t, K.ACTION)))),
        (C.UNDECODABLE, lambda t: _replace_image(t, 3, 1, b"not an image")),
        (C.UNDECODABLE, lambda t: _replace_image(t, 3, 0, b"")),
        (C.BLACK, lambda t: _replace_image(t, 10, 2, _black_png())),
        (C.FAILED, lambda t: _with(t, K.SUCCESS, [False] * N)),
        (C.IDLE, lambda t: _idle_stretch(t, 5, 30)),  # 25 of 40 frames frozen mid-episode
        (C.IDLE, lambda t: _idle_stretch(t, 0, N)),  # frozen from start to end
        (C.TOO_SHORT, lambda t: t.slice(0, 6)),
        (C.OUTLIER, lambda t: _set_vectors(t, K.ACTION, vectors(t, K.ACTION) + 25.0 * (np.arange(N)[:, None] == 9) * [1, 0, 0, 0])),
    ],
)
def test_filter_drops_planted_defect_and_keeps_clean_episode(reason, defect):
    clean, bad = _planted(1, defect)
    out, report, kept = _clean([clean, bad, synthetic_episode(2, N)])
    assert kept == [0, 2]
    assert _dropped(report, reason) == [1]
    assert sum(len(v) for v in report.datasets["synthetic"].dropped.values()) == 1
    d = report.datasets["synthetic"]
    assert (d.episodes_in, d.episodes_out, d.frames_out) == (3, 2, 2 * N)
    assert out.num_rows == 2 * N


@pytest.mark.parametrize(
    "reason, defect, off",
    [
        (C.NONFINITE, lambda t: _set_vectors(t, K.STATE, vectors(t, K.STATE) * np.nan), {"drop_nonfinite": False, "outlier_z": 0}),
        (C.BLACK, lambda t: _replace_image(t, 10, 2, _black_png()), {"check_images": False}),
        (C.BLACK, lambda t: _replace_image(t, 10, 2, _black_png()), {"max_bad_image_share": 0.05}),  # 1/40 frames
        (C.FAILED, lambda t: _with(t, K.SUCCESS, [False] * N), {"drop_failed": False}),
        (C.TOO_SHORT, lambda t: t.slice(0, 6), {"min_frames": 6}),
        (C.IDLE, lambda t: _idle_stretch(t, 5, 30), {"max_idle_share": 1.0}),
        (C.OUTLIER, lambda t: _set_vectors(t, K.ACTION, vectors(t, K.ACTION) + 25.0 * (np.arange(N)[:, None] == 9) * [1, 0, 0, 0]),
         {"outlier_z": 0}),
    ],
)
def test_switched_off_filter_keeps_episode(reason, defect, off):
    clean, bad = _planted(1, defect)
    _, report, kept = _clean([clean, bad], **off)
    assert kept == [0, 1], report
    assert not _dropped(report, reason)


def test_duplicate_keeps_lowest_episode_id():
    first = synthetic_episode(3, N)
    copy = _with(first, K.EPISODE_ID, [8] * N)
    other = synthetic_episode(5, N)
    _, report, kept = _clean([copy, other, first])
    assert kept == [3, 5]
    assert _dropped(report, C.DUPLICATE) == [8]
    _, report, kept = _clean([copy, first], drop_duplicates=False)
    assert kept == [3, 8]


def test_same_sequence_in_two_datasets_is_not_a_duplicate():
    a = synthetic_episode(0, N, dataset="a")
    b = _with(a, K.DATASET, ["b"] * N)
    _, report, _ = _clean([a, b])
    assert report.dropped_count(C.DUPLICATE) == 0


def test_leading_and_trailing_idle_frames_are_trimmed_and_frames_rebased():
    ep = _idle_stretch(_idle_stretch(synthetic_episode(0, N), 0, 12), N - 11, N)
    out, report, kept = _clean([ep])
    assert kept == [0]
    # keeps the last resting frame before motion (11) and the first one after it (29): frames 11..29
    assert out.num_rows == 19
    assert out.column(K.FRAME_INDEX).to_pylist() == list(range(19))
    assert out.column(K.TIMESTAMP)[0].as_py() == 0.0
    np.testing.assert_array_equal(vectors(out, K.ACTION), vectors(ep, K.ACTION)[11:30])
    d = report.datasets["synthetic"]
    assert (d.frames_in, d.frames_out, d.frames_trimmed) == (N, 19, 21)
    # a resting stretch shorter than idle_min_frames is not idle: K=12 trims only the leading 12 frames
    assert _clean([ep], idle_min_frames=12)[0].num_rows == N - 11
    assert _clean([ep], idle_min_frames=13)[0].num_rows == N


def test_idle_bounds_recorded_values():
    cfg = C.CleaningConfig(idle_min_frames=3)
    state = np.array([[0], [0], [0], [1], [2], [2], [2], [2], [3], [4], [4], [4]], np.float32)
    action = np.zeros_like(state)
    # leading stretch 0..2 -> keep from 2; interior 4..7 (4 frames) idle; trailing 9..11 -> keep up to 9
    assert C.idle_bounds(state, action, cfg) == (2, 10, 4, False)
    assert C.idle_bounds(state, action, C.CleaningConfig(idle_min_frames=3, trim_idle=False)) == (0, 12, 10, False)
    assert C.idle_bounds(np.zeros((5, 2)), np.zeros((5, 1)), cfg) == (0, 5, 5, True)


def test_robust_scale_recorded_values_and_floors():
    a = np.zeros((1000, 3))
    a[:, 0] = np.linspace(-1, 1, 1000)
    a[900:, 1] = 1.0  # gripper closed in 10% of frames: MAD is 0, the 1-99% spread is 1
    a[999, 2] = 5.0  # one spike in an otherwise constant dimension: MAD and spread are 0
    med, scale = C.robust_action_stats(a)
    np.testing.assert_allclose(med, [0.0, 0.0, 0.0], atol=1e-12)
    assert scale[0] == pytest.approx(1.4826 * np.median(np.abs(a[:, 0])))  # MAD wins over the spread floor
    assert scale[1] == pytest.approx(1.0 / 4.6527)
    assert scale[2] == pytest.approx(1.2533 * 0.005)


def test_actions_resting_at_one_value_do_not_make_full_range_moves_outliers():
    # Like Meta-World experts: x mostly ~0, now and then a full-range move to +-1.
    eps = []
    for i in range(8):
        ep = synthetic_episode(i, N)
        a = vectors(ep, K.ACTION).copy()
        a[:, 0] = 0.01 * np.random.default_rng(i).normal(size=N)
        if i >= 6:
            a[N // 2 : N // 2 + 3, 0] = 1.0
        eps.append(_set_vectors(ep, K.ACTION, a))
    _, report, kept = _clean(eps)
    assert kept == list(range(8)), report


def test_vqa_rows_only_get_image_checks():
    vqa_ok, vqa_bad = synthetic_vqa(10), synthetic_vqa(11)
    vqa_bad = _replace_image(vqa_bad, 0, 0, b"\x89PNG broken")
    _, report, kept = _clean([synthetic_episode(0, N), vqa_ok, vqa_bad])
    assert kept == [0, 10]
    assert report.datasets["vqa"].dropped == {C.UNDECODABLE: [11]}


def test_first_reason_wins_and_report_round_trips(tmp_path):
    nan_and_failed = _with(_set_vectors(synthetic_episode(1, N), K.STATE, np.full((N, 7), np.nan)), K.SUCCESS, [False] * N)
    short = synthetic_episode(2, 5)
    _, report, kept = _clean([synthetic_episode(0, N), nan_and_failed, short])
    assert kept == [0]
    assert report.datasets["synthetic"].dropped == {C.NONFINITE: [1], C.TOO_SHORT: [2]}
    report.save(tmp_path / "r.json")
    again = C.CleaningReport.load(tmp_path / "r.json")
    assert again == report
    assert json.loads((tmp_path / "r.json").read_text())["reasons"] == list(C.REASONS)
    text = report.table()
    assert "dropped: nonfinite" in text and "frames out" in text
    assert text.splitlines()[0].split() == ["synthetic"]


def test_success_unknown_is_kept_and_last_known_value_decides():
    unknown = _with(synthetic_episode(1, N), K.SUCCESS, [None] * N)
    late_fail = _with(synthetic_episode(2, N), K.SUCCESS, [None] * (N - 1) + [False])
    _, report, kept = _clean([synthetic_episode(0, N), unknown, late_fail])
    assert kept == [0, 1]
    assert _dropped(report, C.FAILED) == [2]


def test_bad_input_raises_naming_the_problem():
    ep = synthetic_episode(0, N)
    gap = _with(ep, K.FRAME_INDEX, list(range(N - 1)) + [N + 3])
    with pytest.raises(ValueError, match="frame_index"):
        C.clean_table(gap)
    with pytest.raises(ValueError, match="image_check_every"):
        C.CleaningConfig(image_check_every=0)
    with pytest.raises(ValueError, match="max_idle_share"):
        C.CleaningConfig(max_idle_share=1.5)
    summaries = C.summarize_episodes(ep, C.CleaningConfig())
    with pytest.raises(ValueError, match="more than one summary"):
        C.decide(pa.concat_tables([summaries, summaries]), C.CleaningConfig())
    decisions, _ = C.decide(summaries, C.CleaningConfig())
    with pytest.raises(ValueError, match="whole episodes"):
        C.apply_decisions(ep.slice(0, 10), C.decision_lookup(decisions))
    with pytest.raises(KeyError, match="synthetic/7"):
        C.apply_decisions(synthetic_episode(7, 5), C.decision_lookup(decisions))


def test_unsorted_rows_are_cleaned_like_sorted_ones():
    eps = pa.concat_tables([synthetic_episode(i, 20) for i in range(3)])
    shuffled = eps.take(np.random.default_rng(0).permutation(eps.num_rows))
    out_a, rep_a = C.clean_table(eps)
    out_b, rep_b = C.clean_table(shuffled)
    assert out_a.equals(out_b) and rep_a == rep_b


def test_summaries_of_split_batches_match_one_batch():
    eps = [synthetic_episode(i, 20) for i in range(4)]
    cfg = C.CleaningConfig()
    whole = C.summarize_episodes(pa.concat_tables(eps), cfg)
    parts = pa.concat_tables([C.summarize_episodes(pa.concat_tables(eps[:1]), cfg),
                              C.summarize_episodes(pa.concat_tables(eps[1:]), cfg)])
    assert whole.equals(parts)
