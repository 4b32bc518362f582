"""LeRobot readers refuse bad data by name: each test writes a dataset with the project's writer, damages
it on disk the way real data goes wrong, and checks that reading names the file, episode and camera
(with expected and found values), that the other episodes still read, and that preparing drops the
damaged episode with its reason instead of aborting."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_formats import FPS, H, W, assert_same, make_episode

from syvla import constants as K
from syvla.data import cleaning as C
from syvla.data import images
from syvla.data import lerobot as lr
from syvla.data.lerobot import EpisodeError
from syvla.data.readers import episode_blocks, iter_unit, list_episodes, plan_read_units, read_dataset
from syvla.data.schema import SchemaError

LENGTHS = (6, 4, 5, 5)
FRONT, WRIST = "observation.images.front", "observation.images.wrist"


def _episodes():
    return [make_episode(i, n) for i, n in enumerate(LENGTHS)]


def _write(root, version="v2.1", video=True, eps=None):
    return lr.write_lerobot(eps or _episodes(), root, lr.LeRobotWriteOptions(version=version, video=video, fps=FPS))


def _v21_video(root, key, episode):
    return root / f"videos/chunk-000/{key}/episode_{episode:06d}.mp4"


def _edit_info(root, edit):
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


def _clean_in_process(root, cfg=C.CleaningConfig(min_frames=2)):
    """Pass 1 and the decisions of syvla.data.prepare without Ray: read units, summaries (unreadable
    episodes included), decide."""
    summaries = []
    for unit in plan_read_units(str(root), None, block_frames=8):
        bad = []
        summaries += [C.summarize_episodes(b, cfg) for b in episode_blocks(iter_unit(unit, bad), 8)]
        summaries.append(C.unreadable_summaries(bad))
    return C.decide(pa.concat_tables(summaries), cfg)


# ---------------------------------------------------------------- undecodable video


def test_truncated_video_names_file_episode_camera_and_prepare_drops_it(tmp_path):
    root = _write(tmp_path / "ds")
    mp4 = _v21_video(root, WRIST, 1)
    mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    with pytest.raises(EpisodeError, match=rf"{mp4}: episode 1 camera '{WRIST}': cannot open the video: InvalidDataError") as e:
        list(read_dataset(root))
    assert (e.value.path, e.value.episode, e.value.camera) == (str(mp4), 1, WRIST)
    reader = lr.LeRobotReader(root)
    for i in (0, 2, 3):  # the other episodes still read
        assert_same(_episodes()[i], reader.read_episode(i), max_mean_abs_err=4.0)

    decisions, report = _clean_in_process(root)
    d = report.datasets["toyrobot"]
    assert d.dropped == {C.UNREADABLE: [1]}
    assert d.episodes_in == 4 and d.episodes_out == 3 and d.frames_in == sum(LENGTHS)
    assert str(mp4) in d.errors[1] and "cannot open the video" in d.errors[1]
    assert [r[K.EPISODE_ID] for r in decisions.to_pylist() if r["keep"]] == [0, 2, 3]
    back = C.CleaningReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert back.datasets["toyrobot"].errors == d.errors  # the error survives the report's JSON
    assert f"{C.UNREADABLE} toyrobot/1: {d.errors[1]}" in report.table()


def test_corrupt_frames_in_a_shared_video_name_the_episode(tmp_path):
    """v3.0: the frames of the last episode in one camera's file zeroed on disk (the file's index
    intact) fail at decode time, with PyAV's error wrapped; earlier episodes of the file still read."""
    import av

    root = _write(tmp_path / "ds", version="v3.0")
    mp4 = root / f"videos/{WRIST}/chunk-000/file-000.mp4"
    with av.open(str(mp4)) as c:  # where the last episode's frames (1.5 s on) lie in the file
        spans = [(p.pos, p.size) for p in c.demux(c.streams.video[0])
                 if p.size and p.pts * p.time_base >= sum(LENGTHS[:3]) / FPS - 1e-6]
    raw = bytearray(mp4.read_bytes())
    for pos, size in spans:
        raw[pos : pos + size] = bytes(size)
    mp4.write_bytes(bytes(raw))
    reader = lr.LeRobotReader(root)
    assert_same(_episodes()[0], reader.read_episode(0), max_mean_abs_err=4.0)
    with pytest.raises(EpisodeError, match=rf"{mp4}: episode 3 camera '{WRIST}': decoding failed between "
                                           rf"1\.5000 s and 1\.9000 s: InvalidDataError"):
        reader.read_episode(3)


# ---------------------------------------------------------------- frame size and count against info.json


def test_one_camera_at_another_size(tmp_path):
    """A 16x24 video among 32x48 ones: the frames disagree with features[...].shape."""
    small = []
    for ep in _episodes():
        imgs = [[images.encode(images.decode(b)[::2, ::2]) if v == 0 else b for v, b in enumerate(row)]
                for row in ep.column(K.IMAGES).to_pylist()]
        small.append(ep.set_column(ep.schema.get_field_index(K.IMAGES), K.IMAGES, pa.array(imgs, pa.list_(pa.binary()))))
    other = _write(tmp_path / "small", eps=small)
    root = _write(tmp_path / "ds")
    _v21_video(root, FRONT, 2).write_bytes(_v21_video(other, FRONT, 2).read_bytes())
    with pytest.raises(EpisodeError, match=rf"episode_000002\.mp4: episode 2 camera '{FRONT}': frame 0 is 16x24 "
                                           rf"\(height x width\), info.json declares {H}x{W} "
                                           rf"\(features\['{FRONT}'\]\.shape \[{H}, {W}, 3\]\)"):
        list(read_dataset(root))
    _, report = _clean_in_process(root)
    assert report.datasets["toyrobot"].dropped == {C.UNREADABLE: [2]}


@pytest.mark.parametrize("video", [True, False], ids=["h264", "png"])
def test_info_json_shape_disagrees_with_frames(tmp_path, video):
    root = _write(tmp_path / "ds", version="v3.0", video=video)
    _edit_info(root, lambda info: info["features"][WRIST].update(shape=[H, H, 3]))
    file = f"videos/{WRIST}/chunk-000/file-000.mp4" if video else "data/chunk-000/file-000.parquet"
    with pytest.raises(EpisodeError, match=rf"{root / file}: episode 0 camera '{WRIST}': frame 0 is {H}x{W} "
                                           rf"\(height x width\), info.json declares {H}x{H}"):
        next(read_dataset(root))
    if video:  # info.video.height/width are checked as well
        _edit_info(root, lambda info: info["features"][WRIST].update(shape=[H, W, 3]))
        _edit_info(root, lambda info: info["features"][WRIST]["info"].update({"video.height": 2 * H}))
        with pytest.raises(EpisodeError, match=rf"declares {2 * H}x{W} \(features\['{WRIST}'\]\.info video\.height/width\)"):
            next(read_dataset(root))
    # Every episode disagrees: preparing stops instead of writing an empty dataset (prepare(); the
    # in-process decisions show why: all four are unreadable).
    _edit_info(root, lambda info: info["features"][WRIST].update(shape=[H, H, 3]))
    _, report = _clean_in_process(root)
    assert report.datasets["toyrobot"].dropped == {C.UNREADABLE: [0, 1, 2, 3]}


def test_video_frame_count_disagrees_with_episode_length(tmp_path):
    root = _write(tmp_path / "ds")
    _v21_video(root, FRONT, 1).write_bytes(_v21_video(root, FRONT, 0).read_bytes())  # 6 frames for a 4-frame episode
    with pytest.raises(EpisodeError, match=rf"episode_000001\.mp4: episode 1 camera '{FRONT}': the video has 6 frames, "
                                           rf"the episode has length 4"):
        list(read_dataset(root))


def test_data_rows_disagree_with_episode_length(tmp_path):
    root = _write(tmp_path / "ds", video=False)
    path = root / "data/chunk-000/episode_000002.parquet"
    pq.write_table(pq.read_table(path).slice(0, 3), path)
    with pytest.raises(EpisodeError, match=r"episode_000002\.parquet: episode 2: 3 rows, metadata says length 5"):
        list(read_dataset(root))


# ---------------------------------------------------------------- v3.0 video spans


def _edit_episode_rows(root, edit):
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    rows = pq.read_table(path).to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_v30_from_timestamp_off_by_one_frame(tmp_path):
    root = _write(tmp_path / "ds", version="v3.0")
    col = f"videos/{FRONT}/from_timestamp"

    def shift(rows):
        rows[1][col] += 1 / FPS  # 0.6 -> 0.7: the reader would seek one frame late

    _edit_episode_rows(root, shift)
    reader = lr.LeRobotReader(root)
    with pytest.raises(EpisodeError, match=rf"file-000\.mp4: episode 1 camera '{FRONT}': from_timestamp 0\.7000 s to "
                                           rf"to_timestamp 1\.0000 s spans 3\.00 frames at 10 fps, the episode has length 4"):
        reader.read_episode(1)
    for i in (0, 2, 3):  # its neighbours are untouched
        assert_same(_episodes()[i], reader.read_episode(i), max_mean_abs_err=4.0)
    _, report = _clean_in_process(root)
    assert report.datasets["toyrobot"].dropped == {C.UNREADABLE: [1]}


def test_v30_spans_that_overlap_mark_both_episodes(tmp_path):
    """from and to both shifted: the span holds 4 frames but one of them is episode 2's."""
    root = _write(tmp_path / "ds", version="v3.0")

    def shift(rows):
        for end in ("from_timestamp", "to_timestamp"):
            rows[1][f"videos/{FRONT}/{end}"] += 1 / FPS

    _edit_episode_rows(root, shift)
    reader = lr.LeRobotReader(root)
    with pytest.raises(EpisodeError, match=rf"episode 1 camera '{FRONT}': span 0\.7000\.\.1\.1000 s overlaps episode 2's "
                                           rf"1\.0000\.\.1\.5000 s"):
        reader.read_episode(1)
    with pytest.raises(EpisodeError, match=r"episode 2 camera .*overlaps episode 1's"):
        reader.read_episode(2)
    assert_same(_episodes()[0], reader.read_episode(0), max_mean_abs_err=4.0)


def test_v30_to_timestamp_is_required(tmp_path):
    root = _write(tmp_path / "ds", version="v3.0")
    _edit_episode_rows(root, lambda rows: [r.pop(f"videos/{FRONT}/to_timestamp") for r in rows])
    with pytest.raises(SchemaError, match=rf"field 'videos/{FRONT}/to_timestamp' missing"):
        lr.LeRobotReader(root)


# ---------------------------------------------------------------- v2.1 gaps in episode numbers


@pytest.mark.parametrize("video", [True, False], ids=["h264", "png"])
def test_v21_gap_in_episode_numbers(tmp_path, video):
    """Episodes 0, 1, 3 (episode 2 deleted, as LeRobot's delete tools leave it): every frame reads back and the
    global index ranges come from the data files' `index` column, not from summed lengths."""
    root = _write(tmp_path / "ds", video=video)
    (root / "data/chunk-000/episode_000002.parquet").unlink()
    for key in (FRONT, WRIST):
        if video:
            _v21_video(root, key, 2).unlink()
    for meta in ("episodes.jsonl", "episodes_stats.jsonl"):
        path = root / "meta" / meta
        lines = [line for line in path.read_text().splitlines() if json.loads(line)["episode_index"] != 2]
        path.write_text("\n".join(lines) + "\n")
    eps = _episodes()
    back = list(read_dataset(root))
    assert len(back) == 3
    for orig, got in zip([eps[0], eps[1], eps[3]], back):
        assert_same(orig, got, max_mean_abs_err=4.0 if video else 0.0)
    listing = list_episodes(root)
    assert [e["episode_index"] for e in listing] == [0, 1, 3]
    assert [(e["from_index"], e["to_index"]) for e in listing] == [(0, 6), (6, 10), (15, 20)]
    reader = lr.LeRobotReader(root)
    assert [reader.episode_of_index(i) for i in (0, 9, 15, 19)] == [0, 1, 3, 3]
    with pytest.raises(IndexError, match="frame index 12 is in no episode"):
        reader.episode_of_index(12)


def test_v21_index_column_disagrees_with_length(tmp_path):
    root = _write(tmp_path / "ds", video=False)
    path = root / "data/chunk-000/episode_000001.parquet"
    t = pq.read_table(path)
    t = t.set_column(t.column_names.index("index"), "index", pa.array([6, 7, 8, 20], pa.int64()))
    pq.write_table(t, path)
    with pytest.raises(EpisodeError, match=r"episode_000001\.parquet: episode 1: column 'index' spans 6\.\.20 \(15 frames\), "
                                           r"metadata says length 4"):
        list_episodes(root)


# ---------------------------------------------------------------- prepare on Ray


@pytest.mark.integration
@pytest.mark.slow
def test_prepare_drops_an_undecodable_episode_and_keeps_the_rest(ray_local, tmp_path):
    from syvla.data import prepared as P
    from syvla.data.prepare import PrepareConfig, prepare

    root = _write(tmp_path / "ds")
    mp4 = _v21_video(root, FRONT, 2)
    mp4.write_bytes(mp4.read_bytes()[:100])
    cfg = PrepareConfig(inputs=(f"toyrobot={root}",), output=str(tmp_path / "prepared"), chunk_len=2, block_frames=8,
                        cleaning=C.CleaningConfig(min_frames=2))
    result = prepare(cfg)
    d = result.report.datasets["toyrobot"]
    assert d.dropped == {C.UNREADABLE: [2]} and d.episodes_out == 3
    assert f"{mp4}: episode 2 camera '{FRONT}'" in d.errors[2]
    assert P.read_report(cfg.output).datasets["toyrobot"].errors == d.errors
    assert P.read_manifest(cfg.output).datasets["toyrobot"].episodes == 3
    # No episode readable: the run stops and names the first error instead of writing nothing.
    _edit_info(root, lambda info: info["features"][WRIST].update(shape=[H, H, 3]))
    with pytest.raises(ValueError, match=r"none of its 4 episodes can be read; episode 0: .*info.json declares"):
        prepare(PrepareConfig(inputs=(f"toyrobot={root}",), output=str(tmp_path / "p2"), chunk_len=2,
                              block_frames=8, cleaning=C.CleaningConfig(min_frames=2)))
