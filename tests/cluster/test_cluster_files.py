"""The cluster configurations name only things that exist: scripts, flags, import paths, Serve args,
repository files, KubeRay fields; and the checker catches each kind of defect planted in a copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cluster_check import ENTRYPOINT_RE, check_repo

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("cluster", "pipelines", "syvla", "docs", "tests/cluster", "constraints.txt", "pyproject.toml", "Makefile")


def test_repository_cluster_configs_resolve():
    assert check_repo(ROOT) == []


def test_the_configs_cover_the_cluster_shapes():
    """Head + CPU + GPU worker types with autoscaling ranges; the RayJob pretrains; the RayService serves."""
    for rel in ("cluster/aws.yaml", "cluster/gcp.yaml"):
        cfg = yaml.safe_load((ROOT / rel).read_text())
        types = cfg["available_node_types"]
        gpu = [t for t in types.values() if t["resources"].get("GPU")]
        cpu = [n for n, t in types.items() if not t["resources"].get("GPU") and n != cfg["head_node_type"]]
        assert gpu and cpu and all(t["max_workers"] > t["min_workers"] for t in gpu), rel
    docs = {d["kind"]: d for p in (ROOT / "cluster/kuberay").glob("*.yaml") for d in yaml.safe_load_all(p.read_text())}
    groups = {g["groupName"]: g for g in docs["RayCluster"]["spec"]["workerGroupSpecs"]}
    assert {"cpu-data", "gpu-train"} <= set(groups) and docs["RayCluster"]["spec"]["enableInTreeAutoscaling"]
    assert ENTRYPOINT_RE.search(docs["RayJob"]["spec"]["entrypoint"]).group("script").endswith("pipelines/pretrain.py")
    serve = yaml.safe_load(docs["RayService"]["spec"]["serveConfigV2"])
    auto = serve["applications"][0]["deployments"][0]["autoscaling_config"]
    assert auto["max_replicas"] > auto["min_replicas"] >= 1


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    """A pristine copy of what the checker reads; each test plants one defect in its own copy."""
    base = tmp_path_factory.mktemp("repo")
    for rel in COPIED:
        src, dst = ROOT / rel, base / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst)
    assert check_repo(base) == []  # the copy is clean before any defect
    return base


DEFECTS = {
    "wrong Serve import path": ("cluster/kuberay/rayservice.yaml", "deployment:build_app", "deployment:build_ap",
                                "does not resolve"),
    "Serve arg the builder rejects": ("cluster/serve_config.yaml", "      replay_dir: runs/replay",
                                      "      replay_path: runs/replay", "replay_path\n  Extra inputs are not permitted"),
    "unknown Serve deployment": ("cluster/kuberay/rayservice.yaml", "- name: SyVLAPolicy", "- name: SyVLAPolicyX",
                                 "configures deployment 'SyVLAPolicyX'"),
    "missing pipeline script": ("cluster/kuberay/rayjob-pretrain.yaml", "pipelines/pretrain.py",
                                "pipelines/pretrain_v2.py", "pretrain_v2.py is not a script"),
    "unknown pipeline flag": ("cluster/kuberay/rayjob-pretrain.yaml", "--data.path ", "--data.paths ",
                              "has no flag --data.paths"),
    "KubeRay field typo": ("cluster/kuberay/raycluster.yaml", "      minReplicas: 0\n      maxReplicas: 16",
                           "      minReplica: 0\n      maxReplicas: 16", "fields ['minReplica']"),
    "replicas outside min/max": ("cluster/kuberay/raycluster.yaml", "maxReplicas: 16", "maxReplicas: -1",
                                 "minReplicas <= replicas <= maxReplicas"),
    "launcher schema violation": ("cluster/aws.yaml", "    min_workers: 0\n    max_workers: 16",
                                  "    min_worker: 0\n    max_workers: 16", "launcher rejects"),
    "missing setup script": ("cluster/gcp.yaml", "cluster/setup_node.sh gpu", "cluster/setup_nodes.sh gpu",
                             "names cluster/setup_nodes.sh"),
    "GPU node with CPU setup": ("cluster/aws.yaml", "cluster/setup_node.sh gpu", "cluster/setup_node.sh cpu",
                                "does not run `setup_node.sh gpu`"),
    "GPU pins drift": ("cluster/constraints-gpu.txt", "ray==2.60.0", "ray==2.59.0",
                       "constraints-gpu.txt: ray '2.59.0'"),
    "excludes drop the code": ("cluster/runtime_env.yaml", "  - /data/", "  - data/", "excludes drop syvla/data"),
    "image root moved": ("cluster/Dockerfile", "WORKDIR /home/ray/syvla", "WORKDIR /home/ray/app",
                         "WORKDIR ['/home/ray/app']"),
}


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_checker_catches_planted_defect(name, repo_copy, tmp_path):
    rel, old, new, expected = DEFECTS[name]
    repo = tmp_path / "repo"
    shutil.copytree(repo_copy, repo)
    text = (repo / rel).read_text()
    assert text.count(old) >= 1, f"{rel} no longer contains {old!r}: update the planted defect"
    (repo / rel).write_text(text.replace(old, new, 1))
    problems = check_repo(repo)
    assert any(expected in p for p in problems), problems
