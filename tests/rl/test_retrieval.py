import numpy as np
import pytest
import torch

from syvla.rl.retrieval import (PAPER_VIEW_WEIGHTS, ClipImageEncoder, ExpertIndex, RetrievalConfig,
                                images_from_uint8, random_baseline, retrieve)


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def _planted_index(n_filler=20, d=16, seed=0):
    """Query: e0 in every view. Row A: cos 0.9 on the centre view, 0 on the wrists.
    Row B: cos 0.6 on the centre view, 1.0 on both wrists.
    Paper weights (0.83, 0.083, 0.083): A = 0.83*0.9 = 0.747, B = 0.83*0.6 + 2*0.083 = 0.664 -> A wins.
    Unweighted (1, 1, 1):               A = 0.9,              B = 0.6 + 2 = 2.6          -> B wins.
    Fillers live in dims 3.. so their cosine with the query is 0 on every view."""
    rng = np.random.default_rng(seed)
    e = np.eye(d, dtype=np.float32)
    a = np.stack([0.9 * e[0] + np.sqrt(1 - 0.81) * e[1], e[2], e[2]])
    b = np.stack([0.6 * e[0] + 0.8 * e[1], e[0], e[0]])
    filler = rng.normal(size=(n_filler, 3, d)).astype(np.float32)
    filler[..., :3] = 0
    filler /= np.linalg.norm(filler, axis=-1, keepdims=True)
    emb = np.concatenate([filler[:7], a[None], filler[7:13], b[None], filler[13:]])  # A at row 7, B at row 14
    query = np.stack([e[0], e[0], e[0]])[None]
    return ExpertIndex(np.ascontiguousarray(emb, dtype=np.float32), np.arange(100, 100 + len(emb))), query


def test_weighted_metric_finds_the_planted_neighbour():
    index, query = _planted_index()
    s, i = index.topk(query, k=2)
    assert i.tolist() == [[7, 14]]
    np.testing.assert_allclose(s.numpy(), [[0.747, 0.664]], atol=1e-5)
    assert index.sample_ids[i[0, 0].item()] == 107
    # the weights matter: plain unweighted cosine prefers B
    _, i_flat = index.topk(query, k=1, view_weights=(1.0, 1.0, 1.0))
    assert i_flat.item() == 14


def _reference_topk(emb, query, k, w):
    """Plain numpy: per-view cosine, weighted sum, full sort."""
    qn = query / np.linalg.norm(query, axis=-1, keepdims=True)
    sims = sum(w[v] * emb[:, v, :].astype(np.float64) @ qn[:, v, :].T.astype(np.float64) for v in range(len(w)))
    order = np.argsort(-sims, axis=0, kind="stable")[:k].T
    return np.take_along_axis(sims.T, order, 1), order


@pytest.mark.parametrize("block_rows", [None, 1, 7, 64])
def test_blocked_topk_matches_brute_force(block_rows):
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(200, 3, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    query = rng.normal(size=(5, 3, 8)).astype(np.float32) * 3.0  # un-normalized queries are normalized
    index = ExpertIndex(emb, np.arange(200))
    s, i = index.topk(query, k=6, block_rows=block_rows)
    ref_s, ref_i = _reference_topk(emb, query, 6, PAPER_VIEW_WEIGHTS)
    np.testing.assert_array_equal(i.numpy(), ref_i)
    np.testing.assert_allclose(s.numpy(), ref_s, atol=1e-5)
    assert s.dtype == torch.float32 and i.dtype == torch.int64


def test_float16_index_returns_the_same_neighbours():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(300, 3, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    query = torch.from_numpy(emb[[5, 17, 250]])  # rows of the index itself: they are their own top-1
    s16, i16 = ExpertIndex(emb.astype(np.float16), np.arange(300)).topk(query, k=1, block_rows=64)
    assert i16[:, 0].tolist() == [5, 17, 250]
    np.testing.assert_allclose(s16[:, 0].numpy(), sum(PAPER_VIEW_WEIGHTS), atol=2e-3)


def test_save_load_round_trip(tmp_path):
    index, query = _planted_index()
    index = ExpertIndex(index.embeddings.astype(np.float16), index.sample_ids, ("corner2", "topview", "gripperPOV"))
    index.save(str(tmp_path / "idx"))
    for mmap in (False, True):
        loaded = ExpertIndex.load(str(tmp_path / "idx"), mmap=mmap)
        np.testing.assert_array_equal(np.asarray(loaded.embeddings), index.embeddings)
        assert loaded.embeddings.dtype == np.float16
        np.testing.assert_array_equal(loaded.sample_ids, index.sample_ids)
        assert loaded.views == index.views
        assert loaded.topk(query, 2)[1].tolist() == index.topk(query, 2)[1].tolist()


def test_random_baseline_distinct_rows_with_true_scores():
    index, query = _planted_index(n_filler=40)
    queries = np.repeat(query, 3, axis=0)
    s, i = random_baseline(index, queries, k=5, rng=0)
    assert s.shape == i.shape == (3, 5)
    for row in i.tolist():
        assert len(set(row)) == 5 and all(0 <= r < len(index) for r in row)
    np.testing.assert_allclose(s.numpy(), index.scores(queries, i).numpy(), atol=1e-6)
    assert (s[:, :-1] >= s[:, 1:]).all()  # descending like topk
    s2, i2 = random_baseline(index, queries, k=5, rng=0)
    assert torch.equal(i, i2)
    # the ablation switch
    assert retrieve(index, query, RetrievalConfig(k=1))[1].item() == 7
    assert retrieve(index, query, RetrievalConfig(k=3, mode="random"), rng=1)[1].shape == (1, 3)


def test_index_validation():
    with pytest.raises(ValueError, match="L2-normalized"):
        ExpertIndex(np.ones((4, 3, 8), np.float32), np.arange(4))
    index, query = _planted_index()
    with pytest.raises(ValueError, match="one weight per view"):
        index.topk(query, 1, view_weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="query must be"):
        index.topk(query[:, :2], 1)
    with pytest.raises(ValueError, match="RetrievalConfig.view_weights"):
        RetrievalConfig(view_weights=(0.5, -0.1, 0.1))
    with pytest.raises(ValueError, match="RetrievalConfig.mode"):
        RetrievalConfig(mode="nearest")


def test_debug_encoder_builds_and_retrieves_its_own_images():
    enc = ClipImageEncoder.from_preset("debug", seed=0)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 3, 40, 48, generator=g)  # resized to the tower's 32 px
    emb = enc(images)
    assert emb.shape == (6, 3, enc.embed_dim) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(6, 3))
    # views are encoded independently: permuting views permutes embeddings
    torch.testing.assert_close(enc(images[:, [2, 0, 1]]), emb[:, [2, 0, 1]])
    # same seed, same weights
    torch.testing.assert_close(ClipImageEncoder.from_preset("debug", seed=0)(images), emb)
    index = ExpertIndex.build(enc, [(range(0, 3), images[:3]), (range(3, 6), images[3:])], dtype="float32")
    assert len(index) == 6 and index.sample_ids.tolist() == list(range(6))
    _, i = index.topk(enc(images[[4, 1]]), k=1)
    assert i[:, 0].tolist() == [4, 1]


def test_images_from_uint8():
    x = np.zeros((1, 2, 4, 5, 3), np.uint8)
    x[..., 0] = 255
    y = images_from_uint8(x)
    assert y.shape == (1, 2, 3, 4, 5) and y[:, :, 0].eq(1).all() and y[:, :, 1:].eq(0).all()
    with pytest.raises(ValueError, match="uint8"):
        images_from_uint8(x.astype(np.float32))


def test_from_pretrained_refuses_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local file"):
        ClipImageEncoder.from_pretrained("ViT-B-32", str(tmp_path / "missing.bin"))


def test_to_cpu_keeps_reading_the_array_in_place():
    index, query = _planted_index()
    assert index.to("cpu") is index
    assert index.topk(query, 1)[1].item() == 7


def test_from_pretrained_loads_a_local_checkpoint(tmp_path):
    """The real loading path (open_clip.create_model with a file) on a tiny registered config."""
    import json

    import open_clip

    name = "syvla-test-tiny-clip"
    cfg = {"embed_dim": 16,
           "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
           "text_cfg": {"context_length": 4, "vocab_size": 16, "width": 16, "heads": 1, "layers": 1}}
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(tmp_path / f"{name}.json"))
    torch.manual_seed(3)
    ref = open_clip.create_model(name, pretrained=None)
    torch.save(ref.state_dict(), tmp_path / "clip.pt")
    enc = ClipImageEncoder.from_pretrained(name, str(tmp_path / "clip.pt"))
    for k, v in ref.visual.state_dict().items():
        torch.testing.assert_close(enc.visual.state_dict()[k], v)
    assert enc.image_size == (32, 32) and enc.embed_dim == 16
    images = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = (images.reshape(6, 3, 32, 32) - torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = torch.nn.functional.normalize(ref.encode_image(x), dim=-1).view(2, 3, 16)
    torch.testing.assert_close(enc(images), want, atol=1e-5, rtol=1e-5)
