"""Benchmark: similar-sample retrieval (ExpertIndex.topk) against a plain numpy brute force.

One run times top-k for 256 rollout queries against an expert index of 100k
samples x 3 views x 512-d (float32, ~600 MB) with the paper's view weights,
checks both return the same rows, and prints, as the last line,

    retrieval_vs_numpy: X        (ours time / numpy time; goal <= 1.0)

The numpy baseline is what one writes first: per-view cosine similarities
(one GEMM per view), weighted and summed, then argpartition per query.
Timings are medians of interleaved repeats (the machine may be shared).

    .venv/bin/python bench/retrieval.py [--n 100000] [--queries 256] [--k 4] [--fp16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import syvla  # noqa: F401  (first, by project convention)
from syvla.rl.retrieval import PAPER_VIEW_WEIGHTS, ExpertIndex


def numpy_topk(emb: np.ndarray, query: np.ndarray, k: int, weights) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: sims[q, n] = sum_v w_v cos(query[q, v], emb[n, v]); top-k rows per query, descending."""
    qn = query / np.linalg.norm(query, axis=-1, keepdims=True)
    sims = None
    for v, w in enumerate(weights):
        part = qn[:, v, :] @ emb[:, v, :].T  # [Q, N]; emb rows are unit norm
        part *= w
        if sims is None:
            sims = part
        else:
            sims += part
    n = sims.shape[1]
    idx = np.argpartition(sims, n - k, axis=1)[:, n - k:]
    top = np.take_along_axis(sims, idx, 1)
    order = np.argsort(-top, axis=1)
    return np.take_along_axis(top, order, 1), np.take_along_axis(idx, order, 1)


def make_data(n: int, views: int, dim: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, views, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)  # in place: one 600 MB array, no copy
    # rollout queries near some expert samples (as real rollouts are), plus noise
    rows = rng.choice(n, size=queries, replace=False)
    query = emb[rows] + 0.5 * rng.standard_normal((queries, views, dim), dtype=np.float32) / np.sqrt(dim)
    return emb, query.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="expert index size")
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--dim", type=int, default=512, help="CLIP embedding size")
    ap.add_argument("--queries", type=int, default=256, help="rollout samples per lookup")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fp16", action="store_true", help="also time a float16 index (informational)")
    args = ap.parse_args()
    weights = PAPER_VIEW_WEIGHTS if args.views == 3 else tuple([1.0 / args.views] * args.views)

    t0 = time.perf_counter()
    emb, query = make_data(args.n, args.views, args.dim, args.queries, args.seed)
    index = ExpertIndex(emb, np.arange(args.n))  # shares emb's memory
    print(f"data: index {emb.shape} {emb.dtype} ({emb.nbytes / 2**20:.0f} MiB), queries {query.shape}, "
          f"k={args.k}, built in {time.perf_counter() - t0:.1f} s")

    # warm-up (thread pools, page faults), then the equality check on the warm-up results
    s_ours, i_ours = index.topk(query, args.k, weights)
    s_np, i_np = numpy_topk(emb, query, args.k, weights)
    same = np.array_equal(i_ours.numpy(), i_np)
    if not same:  # equal sets with a near-tie swapped are fine; anything else is a bug
        same = all(set(a) == set(b) for a, b in zip(i_ours.numpy().tolist(), i_np.tolist()))
    max_score_diff = float(np.abs(s_ours.numpy() - s_np).max())

    t_ours, t_np = [], []
    for _ in range(args.repeats):  # interleaved so both see the same background load
        t = time.perf_counter()
        index.topk(query, args.k, weights)
        t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        numpy_topk(emb, query, args.k, weights)
        t_np.append(time.perf_counter() - t)
    ours, ref = statistics.median(t_ours), statistics.median(t_np)
    print(f"ours  (torch, one [Q, V*D] x [V*D, N] matmul in blocks + topk): median {ours * 1e3:.1f} ms "
          f"(min {min(t_ours) * 1e3:.1f}) for {args.queries} queries")
    print(f"numpy (per-view GEMM, weighted sum, argpartition):            median {ref * 1e3:.1f} ms "
          f"(min {min(t_np) * 1e3:.1f})")
    print(f"same indices: {same}; max score difference {max_score_diff:.2e}")

    if args.fp16:
        index16 = ExpertIndex(emb.astype(np.float16), np.arange(args.n))
        index16.topk(query, args.k, weights)
        t16 = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            _, i16 = index16.topk(query, args.k, weights)
            t16.append(time.perf_counter() - t)
        agree = float((i16.numpy()[:, 0] == i_np[:, 0]).mean())
        print(f"ours, float16 index ({index16.embeddings.nbytes / 2**20:.0f} MiB): median "
              f"{statistics.median(t16) * 1e3:.1f} ms; top-1 agrees with float32 on {agree:.1%} of queries")

    if not same:
        raise SystemExit(f"MISMATCH: ours and numpy return different rows\nretrieval_vs_numpy: {ours / ref:.3f}")
    print(f"retrieval_vs_numpy: {ours / ref:.3f}")


if __name__ == "__main__":
    main()
