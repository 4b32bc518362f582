"""prepare_data end to end on a tiny LeRobot dataset with planted defects plus a LLaVA JSON."""

import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from syvla import constants as K
from syvla.data import actions as A
from syvla.data import cleaning as C
from syvla.data import prepared as P
from syvla.data.chunking import PREPARED_SCHEMA
from syvla.data.columns import list_column, vectors
from syvla.data.stats import norm_stats_exact
from syvla.data.synthetic import synthetic_episode
from syvla.normalize import NORM_STATS_FILE, NormStats
from syvla.sim import metaworld as mw

ROOT = Path(__file__).resolve().parents[2]
N = 30


def _pipeline():
    spec = importlib.util.spec_from_file_location("prepare_data", ROOT / "pipelines" / "prepare_data.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses resolve their module through sys.modules
    spec.loader.exec_module(mod)
    return mod


def _set(t: pa.Table, column: str, arr) -> pa.Table:
    return t.set_column(t.schema.get_field_index(column), t.schema.field(column), arr)


def _robot_dataset(path: Path) -> None:
    from PIL import Image

    from syvla.data.lerobot import LeRobotWriteOptions, write_lerobot

    eps = [synthetic_episode(i, N, dataset="metaworld", image_size=16) for i in range(6)]
    nan = synthetic_episode(6, N, dataset="metaworld", image_size=16)
    state = vectors(nan, K.STATE).copy()
    state[4, 2] = np.nan
    eps.append(_set(nan, K.STATE, list_column(state)))
    eps.append(_set(eps[0], K.EPISODE_ID, pa.array([7] * N)))  # a copy of episode 0
    eps.append(synthetic_episode(8, N, dataset="metaworld", image_size=16, success=False))
    black = synthetic_episode(9, N, dataset="metaworld", image_size=16)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="PNG")
    imgs = black.column(K.IMAGES).to_pylist()
    imgs[12][1] = buf.getvalue()
    eps.append(_set(black, K.IMAGES, pa.array(imgs, pa.list_(pa.binary()))))
    eps.append(synthetic_episode(10, 5, dataset="metaworld", image_size=16))
    write_lerobot(eps, path, LeRobotWriteOptions(video=False))


def _llava(path: Path) -> Path:
    from PIL import Image

    path.mkdir(parents=True)
    samples = []
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 60 + 40 * i, np.uint8)).save(path / f"{i}.png")
        samples.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": f"grey {i}"}]})
    (path / "train.json").write_text(json.dumps(samples))
    return path / "train.json"


@pytest.mark.integration
@pytest.mark.slow
def test_prepare_data_end_to_end(ray_local, tmp_path, capsys):
    robot, vqa, out = tmp_path / "metaworld", _llava(tmp_path / "llava"), tmp_path / "prepared"
    _robot_dataset(robot)
    prepare_data = _pipeline()
    args = ["--inputs", f"metaworld={robot}", f"coco_vqa={vqa}", "--output", str(out), "--chunk_len", "8",
            "--block_frames", "100"]
    assert prepare_data.main(args) == 0
    printed = capsys.readouterr().out
    assert "dropped: duplicate" in printed and "frames/s" in printed

    report = C.CleaningReport.load(out / P.REPORT_FILE)
    arm = report.datasets["metaworld"]
    assert arm.dropped == {C.NONFINITE: [6], C.BLACK: [9], C.FAILED: [8], C.TOO_SHORT: [10], C.DUPLICATE: [7]}
    assert (arm.episodes_in, arm.episodes_out, arm.frames_in, arm.frames_out) == (11, 6, 10 * N + 5, 6 * N)
    assert (report.datasets["coco_vqa"].episodes_out, report.datasets["coco_vqa"].frames_out) == (3, 3)

    manifest = json.loads((out / P.MANIFEST_FILE).read_text())
    assert manifest["chunk_len"] == 8 and set(manifest["datasets"]) == {"metaworld", "coco_vqa"}
    typed = P.read_manifest(out)
    assert (typed.format_version, typed.chunk_len, typed.action_representation) == (P.FORMAT_VERSION, 8, "native")
    arm_entry, vqa_entry = typed.datasets["metaworld"], typed.datasets["coco_vqa"]
    assert (arm_entry.kind, arm_entry.frames, arm_entry.episodes, arm_entry.source) == (K.KIND_ROBOT, 6 * N, 6, str(robot))
    assert (vqa_entry.kind, vqa_entry.frames, vqa_entry.embodiment) == (K.KIND_VQA, 3, None)
    assert arm_entry.embodiment == P.EmbodimentRecord(name="metaworld", state_dim=7, action_dim=4,
                                                      cameras=("corner2", "topview", "gripperPOV"),
                                                      action_representation="native", fps=10.0)
    shards = pq.read_table(out / "metaworld")
    assert shards.schema == PREPARED_SCHEMA
    assert shards.num_rows == 6 * N
    assert sorted(set(shards.column(K.EPISODE_ID).to_pylist())) == [0, 1, 2, 3, 4, 5]
    rows = {(r[K.EPISODE_ID], r[K.FRAME_INDEX]): r for r in shards.to_pylist()}
    assert rows[(2, N - 3)][K.ACTION_MASK] == [True] * 3 + [False] * 5
    # past the episode's end the chunk holds still: no motion, the last gripper command kept
    last = np.asarray(rows[(2, N - 1)][K.ACTION])
    np.testing.assert_allclose(rows[(2, N - 3)][K.ACTIONS][-1], [0.0, 0.0, 0.0, last[3]], rtol=0)
    np.testing.assert_allclose(rows[(2, N - 3)][K.ACTIONS][2], last, rtol=0)
    vqa_rows = pq.read_table(out / "coco_vqa").to_pylist()
    assert len(vqa_rows) == 3 and all(r[K.KIND] == K.KIND_VQA and r[K.ACTIONS] == [] for r in vqa_rows)

    stats = NormStats.load(out / NORM_STATS_FILE)
    assert stats.names() == ["metaworld"]  # VQA data carries no state/action
    exact = norm_stats_exact(shards)["metaworld"]
    for feature in ("state", "action"):
        got, want = getattr(stats["metaworld"], feature), getattr(exact, feature)
        assert got.count == 6 * N
        for field in ("mean", "std", "q01", "q99"):
            np.testing.assert_allclose(getattr(got, field), getattr(want, field), atol=1e-9)

    from syvla.data.prepare import read_frames
    from syvla.data.stream import read_prepared

    frames = read_frames(str(robot), "metaworld", block_frames=100)
    assert frames.count() == 10 * N + 5
    prepared = read_prepared(out)
    assert set(prepared) == {"metaworld", "coco_vqa"} and prepared["metaworld"].count() == 6 * N

    with pytest.raises(FileExistsError, match="overwrite"):
        prepare_data.main(args)

    # EEF-relative actions: 7-d, the Meta-World mapping of the native ones, statistics of the new form
    assert prepare_data.main(["--inputs", f"metaworld={robot}", "--output", str(out), "--chunk_len", "8",
                              "--overwrite", "true", "--action_representation", "eef_relative"]) == 0
    rel = pq.read_table(out / "metaworld").sort_by([(K.EPISODE_ID, "ascending"), (K.FRAME_INDEX, "ascending")])
    native = shards.sort_by([(K.EPISODE_ID, "ascending"), (K.FRAME_INDEX, "ascending")])
    want = A.to_eef_relative(vectors(native, K.ACTION), vectors(native, K.STATE), mw.EEF_SPEC)
    np.testing.assert_allclose(vectors(rel, K.ACTION), want, atol=1e-7)
    assert NormStats.load(out / NORM_STATS_FILE)["metaworld"].action.dim == 7
    assert json.loads((out / P.MANIFEST_FILE).read_text())["action_representation"] == "eef_relative"
    assert P.read_manifest(out).datasets["metaworld"].embodiment.action_dim == 7


def test_episode_blocks_keep_episodes_whole_and_reject_resumed_ones():
    from syvla.data.readers import episode_blocks

    eps = [synthetic_episode(i, 10 + i, image_size=8) for i in range(5)]
    # the reader's tables cut through episodes: 0..2 in one table, 3 split over two
    stream = [pa.concat_tables(eps[:3]), eps[3].slice(0, 4), pa.concat_tables([eps[3].slice(4), eps[4]])]
    blocks = list(episode_blocks(stream, block_frames=20))
    assert [sorted(set(b.column(K.EPISODE_ID).to_pylist())) for b in blocks] == [[0, 1], [2, 3], [4]]
    assert pa.concat_tables(blocks).equals(pa.concat_tables(eps))
    with pytest.raises(ValueError, match="resumes after other episodes"):
        list(episode_blocks([eps[0].slice(0, 3), eps[1], eps[0].slice(3)], block_frames=5))


def test_manifest_round_trip_and_bad_manifests(tmp_path):
    emb = P.EmbodimentRecord(name="arm", state_dim=3, action_dim=2, cameras=("top",), fps=15.0,
                             state_names=("x", "y", "z"), action_names=("a", "b"))
    m = P.Manifest(chunk_len=5, datasets={"arm": P.DatasetEntry("arm", "/raw/arm", 2, 40, 4, K.KIND_ROBOT, emb),
                                          "vqa": P.DatasetEntry("vqa", "/raw/vqa.json", 1, 3, 3, K.KIND_VQA)},
                   action_representation="eef_relative", eef_rotation="rot6d")
    P.write_manifest(tmp_path, m)
    assert P.read_manifest(tmp_path) == m
    assert list(P.shard_dirs(tmp_path)) == ["arm", "vqa"] and P.shard_dirs(tmp_path)["arm"] == tmp_path / "arm"
    # A manifest written before format_version, kind and embodiment were recorded still reads.
    old = {"chunk_len": 5, "action_representation": "native", "eef_rotation": "axis_angle",
           "datasets": {"arm": {"path": "arm", "source": "/raw/arm", "files": 1, "frames": 9, "episodes": 1}}}
    P.manifest_path(tmp_path).write_text(json.dumps(old))
    assert P.read_manifest(tmp_path).datasets["arm"] == P.DatasetEntry("arm", "/raw/arm", 1, 9, 1)
    with pytest.raises(KeyError, match="no dataset 'nope'"):
        P.read_manifest(tmp_path).entry("nope", tmp_path)
    del old["datasets"]["arm"]["frames"]
    P.manifest_path(tmp_path).write_text(json.dumps(old))
    with pytest.raises(ValueError, match="dataset 'arm': field 'frames' is missing"):
        P.read_manifest(tmp_path)
    P.manifest_path(tmp_path).write_text(json.dumps({**old, "format_version": P.FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="format_version"):
        P.read_manifest(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        P.read_manifest(tmp_path / "elsewhere")
