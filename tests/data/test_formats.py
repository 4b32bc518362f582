"""Dataset formats -> FRAME_SCHEMA: LeRobot v2.1 / v3.0 (video and PNG features), RLDS tfrecords, LLaVA JSON.

Each test writes a tiny dataset, reads it back and compares values: state,
action and text exactly, images exactly for PNG and within a few gray levels
for (lossy) video. Bad-input tests check that the error names the file and field.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from syvla import constants as K
from syvla.data import images
from syvla.data import lerobot as lr
from syvla.data.lerobot import layout as lr_layout
from syvla.data.readers import detect_format, list_episodes, read_dataset
from syvla.data.schema import FRAME_SCHEMA, SchemaError

FPS = 10.0
VIEWS = ("front", "wrist")
H, W = 32, 48  # non-square: catches height/width mix-ups


def frame_image(t: int, v: int) -> np.ndarray:
    """Smooth gradient plus a bright square that moves with t (video codecs keep these well).

    Neighbouring frames differ by ~7 gray levels on average, so a reader that
    returns the wrong frame fails the 4-level tolerance of assert_same.
    """
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([np.clip(xx * 3 + 20 * v + 6 * t, 0, 255), np.clip(yy * 5 + 10, 0, 255),
                    np.full((H, W), 40 + 40 * v + 15 * t)], axis=-1).astype(np.uint8)
    img[8:16, 4 + 2 * t:12 + 2 * t] = (230, 230, 40)
    return img


def make_episode(ep_id: int, n: int, task="stack the red block", cot=None, success=True, state_dim=3, action_dim=2,
                 dataset="toyrobot") -> pa.Table:
    t = np.arange(n)
    state = (ep_id * 100 + t[:, None] + np.arange(state_dim) * 0.25).astype(np.float32)
    action = (-0.5 * t[:, None] + np.arange(action_dim)).astype(np.float32)
    return pa.Table.from_pydict({
        K.DATASET: [dataset] * n,
        K.EPISODE_ID: [ep_id] * n,
        K.FRAME_INDEX: t.tolist(),
        K.TIMESTAMP: (t / FPS).tolist(),
        K.TASK: [task] * n,
        K.COT: cot if isinstance(cot, list) else [cot] * n,
        K.IMAGE_VIEWS: [list(VIEWS)] * n,
        K.IMAGES: [[images.encode(frame_image(i, v)) for v in range(len(VIEWS))] for i in range(n)],
        K.STATE: state.tolist(),
        K.ACTION: action.tolist(),
        K.SUCCESS: [success] * n,
        K.KIND: [K.KIND_ROBOT] * n,
        K.CONVERSATION: [None] * n,
    }, schema=FRAME_SCHEMA)


def episodes():
    return [
        make_episode(0, 6, cot=[f"step {i}" for i in range(6)], success=True),
        make_episode(1, 4, task="open the drawer", success=False),
        make_episode(7, 5, success=None),  # non-contiguous id: kept as source_episode_id
    ]


def assert_same(orig: pa.Table, back: pa.Table, max_mean_abs_err: float):
    assert back.schema == FRAME_SCHEMA
    for col in (K.DATASET, K.EPISODE_ID, K.FRAME_INDEX, K.TASK, K.COT, K.IMAGE_VIEWS, K.STATE, K.ACTION, K.SUCCESS, K.KIND):
        assert back.column(col).to_pylist() == orig.column(col).to_pylist(), col
    np.testing.assert_allclose(back.column(K.TIMESTAMP).to_numpy(), orig.column(K.TIMESTAMP).to_numpy(), atol=1e-6)
    for row_a, row_b in zip(orig.column(K.IMAGES).to_pylist(), back.column(K.IMAGES).to_pylist()):
        for a, b in zip(row_a, row_b):
            a, b = images.decode(a), images.decode(b)
            assert a.shape == b.shape == (H, W, 3)
            err = np.abs(a.astype(int) - b.astype(int)).mean()
            assert err <= max_mean_abs_err, err


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
@pytest.mark.parametrize("video", [True, False], ids=["h264", "png"])
def test_lerobot_round_trip(tmp_path, version, video):
    root = tmp_path / "ds"
    eps = episodes()
    lr.write_lerobot(eps, root, lr.LeRobotWriteOptions(version=version, video=video, fps=FPS))
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == version
    assert info["total_episodes"] == 3 and info["total_frames"] == 15 and info["total_tasks"] == 2
    feat = info["features"]["observation.images.front"]
    assert feat["dtype"] == ("video" if video else "image") and feat["shape"] == [H, W, 3]
    if video:
        assert feat["info"]["video.codec"] == "h264"
    assert detect_format(root) == "lerobot"
    back = list(read_dataset(root))
    assert len(back) == 3
    for a, b in zip(eps, back):
        assert_same(a, b, max_mean_abs_err=4.0 if video else 0.0)
    # Episode listing from metadata alone, and global frame index -> episode.
    listing = list_episodes(root)
    assert [e["episode_id"] for e in listing] == [0, 1, 7]
    assert [(e["from_index"], e["to_index"]) for e in listing] == [(0, 6), (6, 10), (10, 15)]
    reader = lr.LeRobotReader(root)
    assert [reader.episode_of_index(i) for i in (0, 5, 6, 14)] == [0, 0, 1, 2]
    stats = json.loads((root / "meta" / "stats.json").read_text())
    all_state = np.concatenate([e.column(K.STATE).to_pylist() for e in eps])
    np.testing.assert_allclose(stats["observation.state"]["mean"], all_state.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["q99"], np.quantile(all_state, 0.99, axis=0), rtol=1e-6)
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)


def test_lerobot_v30_layout_and_metadata(tmp_path):
    root = tmp_path / "ds"
    lr.write_lerobot(episodes(), root, lr.LeRobotWriteOptions(fps=FPS))
    assert (root / "data/chunk-000/file-000.parquet").is_file()
    assert (root / "videos/observation.images.wrist/chunk-000/file-000.mp4").is_file()
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pylist()
    assert tasks == [{"task_index": 0, "task": "stack the red block"}, {"task_index": 1, "task": "open the drawer"}]
    ep = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in ep] == [6, 4, 5]
    assert [e["videos/observation.images.front/from_timestamp"] for e in ep] == [0.0, 0.6, 1.0]
    assert [e["videos/observation.images.front/to_timestamp"] for e in ep] == [0.6, 1.0, 1.5]
    assert [e["success"] for e in ep] == [True, False, None]
    assert [e["source_episode_id"] for e in ep] == [0, 1, 7]
    assert ep[1]["stats/observation.state/mean"] == pytest.approx([101.5, 101.75, 102.0])
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert data.column("index").to_pylist() == list(range(15))
    assert data.column("task_index").to_pylist() == [0] * 6 + [1] * 4 + [0] * 5


def test_layout_paths_per_version():
    """One location (chunk, file) names a file in either layout; v2.x files follow from the episode index."""
    v30, v21 = lr.LeRobotLayout.new("v3.0", video=True, chunks_size=2), lr.LeRobotLayout.new("v2.1", video=False, chunks_size=2)
    loc = lr_layout.FileLoc(1, 3)
    assert v30.data_file(loc) == "data/chunk-001/file-003.parquet"
    assert v30.video_file("observation.images.top", loc) == "videos/observation.images.top/chunk-001/file-003.mp4"
    assert v21.episode_loc(3) == loc and v21.data_file(loc) == "data/chunk-001/episode_000003.parquet"
    assert v21.video_path is None and v21.info_fields(5, 2)["total_chunks"] == 3
    # v3.0 starts a new file past rows_per_file frames, and a new chunk past chunks_size files
    assert v30.next_loc(None, 0, 0, 5, 8) == lr_layout.FileLoc(0, 0)
    assert v30.next_loc(lr_layout.FileLoc(0, 0), 1, 5, 3, 8) == lr_layout.FileLoc(0, 0)
    assert v30.next_loc(lr_layout.FileLoc(0, 1), 2, 5, 4, 8) == lr_layout.FileLoc(1, 0)
    assert v21.next_loc(lr_layout.FileLoc(0, 0), 2, 5, 4, 8) == lr_layout.FileLoc(1, 2)


def test_lerobot_v30_many_files_seek_across_episodes(tmp_path):
    """rows_per_file=8: episodes spread over several data and video files; every frame still lands right."""
    root = tmp_path / "ds"
    eps = [make_episode(i, 5 + i % 3) for i in range(5)]
    lr.write_lerobot(eps, root, lr.LeRobotWriteOptions(fps=FPS, rows_per_file=8))
    assert len(list((root / "data").glob("chunk-000/file-*.parquet"))) >= 3
    assert len(list((root / "videos/observation.images.front").glob("chunk-000/file-*.mp4"))) >= 3
    reader = lr.LeRobotReader(root)
    for i in (3, 0, 4):  # out of order: seeks backwards too
        assert_same(eps[i], reader.read_episode(i), max_mean_abs_err=4.0)


def test_lerobot_av1(tmp_path):
    root = tmp_path / "ds"
    if lr.available_av1_encoder() is None:
        # No AV1 encoder in this FFmpeg build: asking for AV1 must fail clearly, not fall back silently.
        with pytest.raises(ValueError, match="AV1 encoder"):
            lr.write_lerobot(episodes(), root, lr.LeRobotWriteOptions(fps=FPS, codec="av1"))
        pytest.skip("PyAV's FFmpeg has no AV1 encoder; AV1 decoding untested here")
    eps = episodes()
    lr.write_lerobot(eps, root, lr.LeRobotWriteOptions(fps=FPS, codec="av1"))
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.front"]["info"]["video.codec"] == "av1"
    import av

    with av.open(str(root / "videos/observation.images.front/chunk-000/file-000.mp4")) as c:
        assert c.streams.video[0].codec_context.name in ("av1", "libdav1d", "libaom-av1")
    for a, b in zip(eps, read_dataset(root)):
        assert_same(a, b, max_mean_abs_err=4.0)


def _write_foreign_v21(root):
    """A v2.1 dataset laid out the way LeRobot writes it (not by our writer): PNG structs, CHW shape
    declared, `names` as a dict and as a nested list, no cot / success extras."""
    (root / "meta").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": "v2.1", "robot_type": "koch", "total_episodes": 2, "total_frames": 5, "total_tasks": 1,
        "chunks_size": 1000, "fps": 30, "splits": {"train": "0:2"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": None,
        "features": {
            "observation.image": {"dtype": "image", "shape": [3, H, W], "names": ["channels", "height", "width"]},
            "observation.state": {"dtype": "float32", "shape": [2], "names": {"motors": ["shoulder", "elbow"]}},
            "action": {"dtype": "float32", "shape": [2], "names": [["shoulder", "elbow"]]},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "fold the towel"}) + "\n")
    (root / "meta/episodes.jsonl").write_text(
        "\n".join(json.dumps({"episode_index": e, "tasks": ["fold the towel"], "length": n}) for e, n in ((0, 3), (1, 2))) + "\n")
    index = 0
    for ep, n in ((0, 3), (1, 2)):
        rows = {
            "observation.image": [{"bytes": images.encode(frame_image(i, ep)), "path": f"frame_{i}.png"} for i in range(n)],
            "observation.state": [[ep + 0.5 * i, -1.0 * i] for i in range(n)],
            "action": [[float(i), float(ep)] for i in range(n)],
            "timestamp": np.arange(n, dtype=np.float32) / 30,
            "frame_index": list(range(n)), "episode_index": [ep] * n,
            "index": list(range(index, index + n)), "task_index": [0] * n,
        }
        index += n
        table = pa.table({k: pa.array(v, pa.list_(pa.float32())) if k in ("observation.state", "action") else v
                          for k, v in rows.items()})
        pq.write_table(table, root / f"data/chunk-000/episode_{ep:06d}.parquet")


def test_reads_lerobot_written_v21(tmp_path):
    root = tmp_path / "koch_towel"
    _write_foreign_v21(root)
    back = list(read_dataset(root, name="koch"))
    assert [t.num_rows for t in back] == [3, 2]
    t = back[1]
    assert t.column(K.DATASET).to_pylist() == ["koch", "koch"]
    assert t.column(K.EPISODE_ID).to_pylist() == [1, 1]
    assert t.column(K.TASK).to_pylist() == ["fold the towel"] * 2
    assert t.column(K.STATE).to_pylist() == [[1.0, -0.0], [1.5, -1.0]]
    assert t.column(K.ACTION).to_pylist() == [[0.0, 1.0], [1.0, 1.0]]
    assert t.column(K.IMAGE_VIEWS).to_pylist() == [["image"], ["image"]]
    assert t.column(K.SUCCESS).to_pylist() == [None, None] and t.column(K.COT).to_pylist() == [None, None]
    np.testing.assert_array_equal(images.decode(t.column(K.IMAGES)[1].as_py()[0]), frame_image(1, 1))
    assert lr_layout.flat_names({"motors": ["a", "b"]}) == ["a", "b"] and lr_layout.flat_names([["a", "b"]]) == ["a", "b"]
    assert lr_layout.image_layout({"shape": [3, H, W], "names": ["channels", "height", "width"]}) == "chw"
    assert lr_layout.image_layout({"shape": [H, W, 3], "names": None}) == "hwc"


def test_reads_raw_chw_array_images_and_pandas_tasks_v30(tmp_path):
    """v3.0 written by hand: tasks.parquet indexed by task text (pandas), a raw CHW uint8 image column."""
    root = tmp_path / "raw"
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    chw = [np.moveaxis(frame_image(i, 0), -1, 0) for i in range(2)]
    info = {"codebase_version": "v3.0", "fps": 5, "chunks_size": 1000,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet", "video_path": None,
            "features": {"observation.images.top": {"dtype": "image", "shape": [3, H, W], "names": ["channel", "height", "width"]},
                         "observation.state": {"dtype": "float32", "shape": [1], "names": None},
                         "action": {"dtype": "float32", "shape": [1], "names": None}}}
    (root / "meta/info.json").write_text(json.dumps(info))
    pd.DataFrame({"task_index": [0]}, index=pd.Index(["wipe the table"], name="task")).to_parquet(root / "meta/tasks.parquet")
    pq.write_table(pa.table({"episode_index": [0], "tasks": [["wipe the table"]], "length": [2], "data/chunk_index": [0],
                             "data/file_index": [0], "dataset_from_index": [0], "dataset_to_index": [2]}),
                   root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"observation.images.top": [c.tolist() for c in chw],
                             "observation.state": pa.array([0.25, 0.5], pa.float32()),  # scalar column for shape [1]
                             "action": pa.array([[1.0], [2.0]], pa.list_(pa.float32())),
                             "timestamp": pa.array([0.0, 0.2], pa.float32()), "frame_index": [0, 1],
                             "episode_index": [0, 0], "index": [0, 1], "task_index": [0, 0]}),
                   root / "data/chunk-000/file-000.parquet")
    (t,) = list(read_dataset(root))
    assert t.column(K.TASK).to_pylist() == ["wipe the table"] * 2
    assert t.column(K.STATE).to_pylist() == [[0.25], [0.5]]
    np.testing.assert_array_equal(images.decode(t.column(K.IMAGES)[1].as_py()[0]), frame_image(1, 0))


# ---------------------------------------------------------------- bad input


def test_unrecognized_layouts_name_the_path(tmp_path):
    with pytest.raises(SchemaError, match="does not exist"):
        detect_format(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SchemaError, match=r"empty: unrecognized dataset layout"):
        detect_format(tmp_path / "empty")
    (tmp_path / "half/meta").mkdir(parents=True)
    with pytest.raises(SchemaError, match=r"meta/info.json is missing"):
        detect_format(tmp_path / "half")
    with pytest.raises(SchemaError, match=r"meta/info.json is missing"):
        lr.LeRobotReader(tmp_path / "half")


def test_unknown_codebase_version(tmp_path):
    root = tmp_path / "ds"
    lr.write_lerobot(episodes()[:1], root, lr.LeRobotWriteOptions(fps=FPS, video=False))
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v9.9"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(SchemaError, match=r"info\.json: field 'codebase_version' is 'v9.9'"):
        next(read_dataset(root))


def test_missing_video_file_is_named(tmp_path):
    root = tmp_path / "ds"
    lr.write_lerobot(episodes()[:2], root, lr.LeRobotWriteOptions(fps=FPS))
    mp4 = root / "videos/observation.images.wrist/chunk-000/file-000.mp4"
    mp4.unlink()
    with pytest.raises(SchemaError, match=r"observation\.images\.wrist/chunk-000/file-000\.mp4: episode 0 "
                                          r"camera 'observation\.images\.wrist': the video file is missing"):
        list(read_dataset(root))


def test_state_of_wrong_length_names_file_and_column(tmp_path):
    root = tmp_path / "ds"
    lr.write_lerobot(episodes()[:1], root, lr.LeRobotWriteOptions(fps=FPS, video=False))
    path = root / "data/chunk-000/file-000.parquet"
    t = pq.read_table(path)
    state = t.column("observation.state").to_pylist()
    state[2] = state[2][:2]  # one row one value short
    t = t.set_column(t.column_names.index("observation.state"), "observation.state", pa.array(state, pa.list_(pa.float32())))
    pq.write_table(t, path)
    with pytest.raises(SchemaError, match=r"file-000\.parquet: episode 0: column 'observation\.state' has length 2 at row 2, "
                                          r"expected 3"):
        list(read_dataset(root))


def test_writer_rejects_inconsistent_episodes(tmp_path):
    with pytest.raises(SchemaError, match=r"episode #1: field 'state' has lengths \[4\], expected 3"):
        lr.write_lerobot([make_episode(0, 3), make_episode(1, 3, state_dim=4)], tmp_path / "a", lr.LeRobotWriteOptions(fps=FPS))
    assert not (tmp_path / "a").exists()  # nothing half-written is left behind under the final name
    bad = make_episode(0, 4)
    ts = bad.column(K.TIMESTAMP).to_pylist()
    ts[3] = 0.9
    bad = bad.set_column(bad.column_names.index(K.TIMESTAMP), K.TIMESTAMP, pa.array(ts, pa.float64()))
    with pytest.raises(SchemaError, match=r"field 'timestamp' = 0\.9000 s at frame 3"):
        lr.write_lerobot([bad], tmp_path / "b", lr.LeRobotWriteOptions(fps=FPS))
    with pytest.raises(FileExistsError):
        lr.write_lerobot([make_episode(0, 2)], tmp_path, lr.LeRobotWriteOptions(fps=FPS))


def test_corrupt_png_feature_names_column_and_row(tmp_path):
    root = tmp_path / "koch"
    _write_foreign_v21(root)
    path = root / "data/chunk-000/episode_000001.parquet"
    t = pq.read_table(path)
    col = t.column("observation.image").to_pylist()
    col[1]["bytes"] = b"garbage"
    t = t.set_column(0, "observation.image", pa.array(col, t.schema.field("observation.image").type))
    pq.write_table(t, path)
    with pytest.raises(SchemaError, match=r"episode_000001\.parquet column 'observation\.image' row 1"):
        list(read_dataset(root))


# ---------------------------------------------------------------- RLDS


def _tfds_features() -> dict:
    def tensor(shape, dtype="float32"):
        return {"pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor",
                "tensor": {"shape": {"dimensions": [str(s) for s in shape]}, "dtype": dtype, "encoding": "none"}}

    def image():
        return {"pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
                "image": {"shape": {"dimensions": [str(H), str(W), "3"]}, "dtype": "uint8", "encodingFormat": "png"}}

    def fdict(features):
        return {"pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
                "featuresDict": {"features": features}}

    step = fdict({
        "observation": fdict({"image": image(), "wrist_image": image(), "state": tensor([3]), "gripper": tensor([1])}),
        "action": tensor([2]),
        "reward": {"pythonClassName": "tensorflow_datasets.core.features.scalar.Scalar",
                   "tensor": {"shape": {}, "dtype": "float32"}},
        "is_first": {"pythonClassName": "tensorflow_datasets.core.features.scalar.Scalar",
                     "tensor": {"shape": {}, "dtype": "bool"}},
        "language_instruction": {"pythonClassName": "tensorflow_datasets.core.features.text_feature.Text", "text": {}},
    })
    return fdict({"steps": {"pythonClassName": "tensorflow_datasets.core.features.dataset_feature.Dataset",
                            "sequence": {"feature": step, "length": "-1"}},
                  "episode_metadata": fdict({"file_path": {"pythonClassName": "...Text", "text": {}}})})


def _rlds_episode(e: int, n: int) -> dict:
    """Flattened RLDS episode, in the (value, kind) form of tfrecord.TFRecordWriter.write."""
    return {
        "steps/observation/image": ([images.encode(frame_image(i, 0)) for i in range(n)], "byte"),
        "steps/observation/wrist_image": ([images.encode(frame_image(i, 1)) for i in range(n)], "byte"),
        "steps/observation/state": ([float(e * 10 + i + k / 4) for i in range(n) for k in range(3)], "float"),
        "steps/observation/gripper": ([0.5 * i for i in range(n)], "float"),
        "steps/action": ([float(i - k) for i in range(n) for k in range(2)], "float"),
        "steps/reward": ([0.0] * (n - 1) + [1.0], "float"),
        "steps/is_first": ([1] + [0] * (n - 1), "int"),
        "steps/language_instruction": ([f"put block {e} in the bowl".encode()] * n, "byte"),
        "episode_metadata/file_path": ([f"/raw/ep{e}.h5".encode()], "byte"),
    }


def _write_rlds(root, eps=((0, 3), (1, 2))):
    from tfrecord.writer import TFRecordWriter  # a framing writer independent of ours

    d = root / "toy_rlds" / "1.0.0"
    d.mkdir(parents=True)
    (d / "dataset_info.json").write_text(json.dumps({"name": "toy_rlds", "version": "1.0.0"}))
    (d / "features.json").write_text(json.dumps(_tfds_features()))
    w = TFRecordWriter(str(d / "toy_rlds-train.tfrecord-00000-of-00001"))
    for e, n in eps:
        w.write(_rlds_episode(e, n))
    w.close()
    return d


def test_rlds_round_trip(tmp_path):
    d = _write_rlds(tmp_path)
    top = tmp_path / "toy_rlds"  # <name>/ with a <version>/ below it
    assert detect_format(top) == "rlds"
    assert [e["length"] for e in list_episodes(top)] == [3, 2]
    back = list(read_dataset(top, fps=5.0))
    assert [t.num_rows for t in back] == [3, 2]
    t = back[1]
    assert t.column(K.DATASET).to_pylist() == ["toy_rlds"] * 2
    assert t.column(K.EPISODE_ID).to_pylist() == [1, 1]
    assert t.column(K.TASK).to_pylist() == ["put block 1 in the bowl"] * 2
    # state = observation/state (3) then observation/gripper (1), in features.json order
    assert t.column(K.STATE).to_pylist() == [[10.0, 10.25, 10.5, 0.0], [11.0, 11.25, 11.5, 0.5]]
    assert t.column(K.ACTION).to_pylist() == [[0.0, -1.0], [1.0, 0.0]]
    assert t.column(K.TIMESTAMP).to_pylist() == [0.0, 0.2]
    assert t.column(K.IMAGE_VIEWS).to_pylist() == [["image", "wrist_image"]] * 2
    for i in range(2):
        for v in range(2):
            np.testing.assert_array_equal(images.decode(t.column(K.IMAGES)[i].as_py()[v]), frame_image(i, v))
    # explicit keys, and our own framing writer read back by the same reader
    (t0,) = list(read_dataset(d, state_keys=["gripper"], image_keys=["wrist_image"], name="x"))[:1]
    assert t0.column(K.STATE).to_pylist() == [[0.0], [0.5], [1.0]] and t0.column(K.DATASET)[0].as_py() == "x"
    from syvla.data import rlds

    src = d / "toy_rlds-train.tfrecord-00000-of-00001"
    records = list(rlds.iter_tfrecord(src))
    copy = tmp_path / "copy" / "1.0.0"
    shutil.copytree(d, copy)
    assert rlds.write_tfrecord(copy / "toy_rlds-train.tfrecord-00000-of-00001", records) == 2
    assert (copy / "toy_rlds-train.tfrecord-00000-of-00001").read_bytes() == src.read_bytes()


def test_rlds_bad_inputs_name_file_record_and_field(tmp_path):
    d = _write_rlds(tmp_path)
    shard = d / "toy_rlds-train.tfrecord-00000-of-00001"
    from tfrecord.writer import TFRecordWriter

    ep = _rlds_episode(0, 3)
    ep["steps/action"] = ([1.0, 2.0, 3.0, 4.0], "float")  # 4 values for 3 steps
    w = TFRecordWriter(str(shard))
    w.write(ep)
    w.close()
    with pytest.raises(SchemaError, match=r"tfrecord-00000-of-00001 record 0: field 'steps/action' has 4 values, not a multiple of 3"):
        list(read_dataset(d))
    raw = bytearray(shard.read_bytes())
    raw[40] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(SchemaError, match=r"tfrecord-00000-of-00001: record 0 is corrupt"):
        list(read_dataset(d))
    ep = _rlds_episode(0, 3)
    del ep["steps/language_instruction"]
    w = TFRecordWriter(str(shard))
    w.write(ep)
    w.close()
    with pytest.raises(SchemaError, match="no instruction field"):
        list(read_dataset(d))
    (t,) = list(read_dataset(d, default_task="do the thing"))
    assert t.column(K.TASK)[0].as_py() == "do the thing"


# ---------------------------------------------------------------- LLaVA


def _write_llava(root):
    (root / "imgs").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(frame_image(0, 0)).save(root / "imgs/a.png")
    Image.fromarray(frame_image(1, 1)).save(root / "imgs/b.jpg", quality=98)
    samples = [
        {"id": "s1", "image": "imgs/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is yellow in the picture?"},
            {"from": "gpt", "value": "A small square."},
            {"from": "human", "value": "Where is it?"},
            {"from": "gpt", "value": "Top left."}]},
        {"id": "s2", "image": ["imgs/a.png", "imgs/b.jpg"], "conversations": [
            {"from": "human", "value": "<image> <image> Are these the same?"}, {"from": "gpt", "value": "No."}]},
        {"id": "s3", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]},
    ]
    path = root / "vqa.json"
    path.write_text(json.dumps(samples))
    return path


def test_llava_rows(tmp_path):
    path = _write_llava(tmp_path)
    assert detect_format(path) == "llava" and detect_format(tmp_path) == "llava"
    tables = list(read_dataset(path, name="toy_vqa", rows_per_table=2))
    assert [t.num_rows for t in tables] == [2, 1]
    rows = pa.concat_tables(tables).to_pylist()
    assert [r[K.KIND] for r in rows] == ["vqa"] * 3
    assert [r[K.DATASET] for r in rows] == ["toy_vqa"] * 3
    assert [r[K.EPISODE_ID] for r in rows] == [0, 1, 2]
    assert rows[0][K.TASK] == "What is yellow in the picture?"
    assert json.loads(rows[0][K.CONVERSATION]) == [
        {"role": "user", "content": "What is yellow in the picture?"}, {"role": "assistant", "content": "A small square."},
        {"role": "user", "content": "Where is it?"}, {"role": "assistant", "content": "Top left."}]
    assert json.loads(rows[1][K.CONVERSATION])[0]["content"] == "Are these the same?"
    assert rows[0][K.STATE] == [] and rows[0][K.ACTION] == [] and rows[0][K.SUCCESS] is None
    assert rows[0][K.IMAGE_VIEWS] == ["image"] and rows[1][K.IMAGE_VIEWS] == ["image_0", "image_1"]
    assert rows[2][K.IMAGE_VIEWS] == [] and rows[2][K.IMAGES] == []
    np.testing.assert_array_equal(images.decode(rows[0][K.IMAGES][0]), frame_image(0, 0))
    jpeg = images.decode(rows[1][K.IMAGES][1])
    assert np.abs(jpeg.astype(int) - frame_image(1, 1)).mean() < 3
    (small,) = list(read_dataset(path, max_side=16, rows_per_table=1))[:1]
    assert images.decode(small.column(K.IMAGES)[0].as_py()[0]).shape == (11, 16, 3)


def test_llava_bad_inputs(tmp_path):
    path = _write_llava(tmp_path)
    samples = json.loads(path.read_text())
    samples[1]["image"] = ["imgs/a.png", "imgs/missing.png"]
    path.write_text(json.dumps(samples))
    with pytest.raises(SchemaError, match=r"vqa\.json sample 1 \(id 's2'\): field 'image' names .*imgs/missing\.png"):
        list(read_dataset(path))
    samples[1]["image"] = "imgs/a.png"
    samples[2]["conversations"][1]["from"] = "robot"
    path.write_text(json.dumps(samples))
    with pytest.raises(SchemaError, match=r"sample 2 \(id 's3'\): field 'conversations\[1\]\.from' is 'robot'"):
        list(read_dataset(path))
    path.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(SchemaError, match="must hold a list"):
        detect_format(path)
