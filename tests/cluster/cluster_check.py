"""Static checks of the cluster configurations under cluster/: every name they use must resolve.

`check_repo(root)` returns a list of problems (empty = fine), each naming the file:
- entry points (`python pipelines/<name>.py --flag ...` in launcher commands and RayJob
  entrypoints): the script exists and `--help` lists every flag given;
- repository paths named anywhere in the files (commands, comments, scripts): they exist;
- Serve configs (cluster/serve_config.yaml, a RayService's serveConfigV2): Ray's schema accepts
  them, `import_path` imports, the builder accepts `args`, the deployments they configure exist
  in the built app; the RayService runs the same application as serve_config.yaml;
- cluster-launcher YAMLs: Ray's own schema and defaults (`prepare_config`, `validate_config`),
  min/max workers, images of the installed Ray version, CPU vs GPU setup per node type;
- KubeRay manifests: known fields only (KubeRay v1.5 API), replicas within min/max, rayVersion,
  GPU groups on the GPU image, volumes declared, claims of the declared PVC;
- the runtime environment: Ray accepts it, its excludes keep the code, RayJobs use its env_vars;
- cluster/constraints-gpu.txt pins what constraints.txt pins, torch aside.

Run it by hand: `python tests/cluster/cluster_check.py [repo root]`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import re
import subprocess
import sys
from pathlib import Path

import yaml

# Directories the repository is mounted or copied to on cluster nodes; read from the configs.
LAUNCHERS = ("cluster/aws.yaml", "cluster/gcp.yaml")
SERVE_CONFIG = "cluster/serve_config.yaml"
RUNTIME_ENV = "cluster/runtime_env.yaml"
DOCKERFILE = "cluster/Dockerfile"
KUBERAY_DIR = "cluster/kuberay"
SCANNED_SCRIPTS = ("cluster/setup_node.sh", "cluster/local_job.sh", "cluster/Dockerfile")
CODE_DIRS = ("syvla", "pipelines")  # the runtime env's working_dir upload must keep these

# KubeRay ray.io/v1 fields (API reference of KubeRay v1.5; authOptions from v1.5.1).
KUBERAY_FIELDS = {
    "RayClusterSpec": {"suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations",
                       "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion",
                       "workerGroupSpecs", "authOptions"},
    "HeadGroupSpec": {"template", "headService", "enableIngress", "rayStartParams", "serviceType"},
    "WorkerGroupSpec": {"suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
                        "rayStartParams", "template", "scaleStrategy", "numOfHosts"},
    "AutoscalerOptions": {"resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds",
                          "upscalingMode", "version", "env", "envFrom", "volumeMounts"},
    "AuthOptions": {"mode", "secretName", "enableK8sTokenAuth"},
    "RayJobSpec": {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
                   "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint",
                   "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus",
                   "entrypointNumGpus", "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend", "schedule"},
    "RayServiceSpec": {"serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold", "serveService",
                       "upgradeStrategy", "serveConfigV2", "rayClusterConfig", "excludeHeadPodFromServeSvc"},
}
KUBERAY_KINDS = {"RayCluster": "RayClusterSpec", "RayJob": "RayJobSpec", "RayService": "RayServiceSpec"}

ENTRYPOINT_RE = re.compile(r"\bpython[\w.]*\s+(?P<script>\S*pipelines/[\w-]+\.py)(?P<args>[^;&|\n]*)")
FLAG_RE = re.compile(r"(?<!\S)--([A-Za-z][\w.-]*)")
PATH_RE = re.compile(r"(?P<prefix>~/syvla/|/home/ray/syvla/|\$ROOT/|\$\{ROOT\}/)?"
                     r"(?P<path>(?:(?:cluster|pipelines|syvla|docs|bench|tests)/[\w./-]*\.(?:py|sh|ya?ml|txt|md|json|toml)"
                     r"|constraints\.txt|pyproject\.toml|Makefile)(?![\w/-]))")
PATH_OK_BEFORE = set(" \t\n\"'`([=:,")
IMAGE_RE = re.compile(r"rayproject/ray:(\d+\.\d+\.\d+)")


def _strings(node):
    """Every string value in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _load(path: Path, problems: list[str], rel: str):
    try:
        return list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{rel}: cannot read YAML: {e}")
        return []


# ---- repository paths and entry points --------------------------------------------------
def repo_path(root: Path, mention: str, node_roots: set[str]) -> Path | None:
    """The repository file a path in a config means (a node root prefix stripped); None if not ours."""
    for r in sorted(node_roots, key=len, reverse=True):
        if mention.startswith(r.rstrip("/") + "/"):
            return root / mention[len(r.rstrip("/")) + 1:]
    if mention.startswith(("/", "~", "$")):
        return None
    return root / mention


def check_path_mentions(root: Path, rel: str, text: str, problems: list[str]) -> None:
    for m in PATH_RE.finditer(text):
        if not m.group("prefix") and m.start() > 0 and text[m.start() - 1] not in PATH_OK_BEFORE:
            continue  # part of another path (/mnt/syvla/..., a URL)
        if not (root / m.group("path")).exists():
            problems.append(f"{rel}: names {m.group('path')}, which is not in the repository")


_HELP: dict[str, tuple[int, str]] = {}


def script_help(script: Path) -> tuple[int, str]:
    """(exit code, output) of `python <script> --help`, cached by the script's content."""
    key = hashlib.sha256(script.read_bytes()).hexdigest()
    if key not in _HELP:
        proc = subprocess.run([sys.executable, str(script), "--help"], cwd=str(script.parents[1]), timeout=300,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _HELP[key] = (proc.returncode, proc.stdout)
    return _HELP[key]


def check_entrypoints(root: Path, rel: str, commands, node_roots: set[str], problems: list[str]) -> int:
    """Check every `python pipelines/x.py --flags` in `commands`; returns how many it found."""
    found = 0
    for command in commands:
        for m in ENTRYPOINT_RE.finditer(command):
            found += 1
            script = repo_path(root, m.group("script"), node_roots)
            if script is None or not script.is_file():
                problems.append(f"{rel}: entry point {m.group('script')} is not a script in the repository")
                continue
            rc, text = script_help(script)
            if rc != 0:
                problems.append(f"{rel}: `python {m.group('script')} --help` failed ({rc}): {text[-500:]}")
                continue
            for flag in FLAG_RE.findall(m.group("args")):
                if not re.search(rf"(?<![\w.-])--{re.escape(flag)}(?![\w.-])", text):
                    problems.append(f"{rel}: {m.group('script')} has no flag --{flag}")
    return found


# ---- Serve ------------------------------------------------------------------------------
def resolve_import_path(import_path: str):
    module, sep, attr = import_path.partition(":")
    if not sep:
        module, _, attr = import_path.rpartition(".")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _app_deployments(app) -> set[str]:
    """Names of the deployments of a built Serve Application (the ingress and what it binds)."""
    from ray.serve.deployment import Application

    names, todo = set(), [app]
    while todo:
        a = todo.pop()
        bound = a._bound_deployment
        names.add(bound.name)
        for arg in list(bound.init_args) + list(bound.init_kwargs.values()):
            if isinstance(arg, Application):
                todo.append(arg)
    return names


def check_serve_config(rel: str, cfg: dict, problems: list[str]) -> None:
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(cfg)
    except Exception as e:  # pydantic's ValidationError names the field
        problems.append(f"{rel}: Serve rejects the config: {e}")
        return
    host = (cfg.get("http_options") or {}).get("host")
    for app in cfg["applications"]:
        where = f"{rel}: application {app.get('name')!r}"
        try:
            builder = resolve_import_path(app["import_path"])
        except (ImportError, AttributeError, ValueError) as e:
            problems.append(f"{where}: import_path {app['import_path']!r} does not resolve: {e!r}")
            continue
        from ray.serve.deployment import Application

        if isinstance(builder, Application):
            built = builder
            if app.get("args"):
                problems.append(f"{where}: {app['import_path']} is a bound app; it takes no args")
        elif callable(builder):
            try:
                built = builder(app.get("args") or {})
            except Exception as e:
                problems.append(f"{where}: the builder rejects its args: {e}")
                continue
        else:
            problems.append(f"{where}: {app['import_path']} is neither an application nor a builder")
            continue
        try:
            have = _app_deployments(built)
        except AttributeError:
            problems.append(f"{where}: {app['import_path']} did not build a Serve application")
            continue
        for dep in app.get("deployments") or []:
            if dep["name"] not in have:
                problems.append(f"{where}: configures deployment {dep['name']!r}; the app has {sorted(have)}")
    if host not in (None, "127.0.0.1", "0.0.0.0", "localhost", "::1"):
        problems.append(f"{rel}: http_options.host {host!r} is neither loopback nor all interfaces")


def compare_serve_apps(rel: str, cfg: dict, ref: dict, problems: list[str]) -> None:
    """A RayService must run serve_config.yaml's application: same names, import path, arg and option keys."""
    ours = {a["name"]: a for a in cfg.get("applications", [])}
    theirs = {a["name"]: a for a in ref.get("applications", [])}
    if set(ours) != set(theirs):
        problems.append(f"{rel}: applications {sorted(ours)} differ from {SERVE_CONFIG}'s {sorted(theirs)}")
        return
    for name, a in ours.items():
        b = theirs[name]
        for key in ("import_path", "route_prefix"):
            if a.get(key) != b.get(key):
                problems.append(f"{rel}: application {name!r} {key} {a.get(key)!r} != {SERVE_CONFIG}'s {b.get(key)!r}")
        if set(a.get("args") or {}) != set(b.get("args") or {}):
            problems.append(f"{rel}: application {name!r} args keys {sorted(a.get('args') or {})} != "
                            f"{SERVE_CONFIG}'s {sorted(b.get('args') or {})}")
        da = {d["name"]: d for d in a.get("deployments") or []}
        db = {d["name"]: d for d in b.get("deployments") or []}
        if set(da) != set(db):
            problems.append(f"{rel}: application {name!r} deployments {sorted(da)} != {SERVE_CONFIG}'s {sorted(db)}")
            continue
        for dep in da:
            if set(da[dep]) != set(db[dep]):
                problems.append(f"{rel}: deployment {dep!r} options {sorted(da[dep])} != {SERVE_CONFIG}'s {sorted(db[dep])}")
            if set(da[dep].get("autoscaling_config") or {}) != set(db[dep].get("autoscaling_config") or {}):
                problems.append(f"{rel}: deployment {dep!r} autoscaling_config keys differ from {SERVE_CONFIG}'s")


# ---- cluster launcher -------------------------------------------------------------------
def check_launcher(root: Path, rel: str, cfg: dict, ray_version: str, problems: list[str]) -> set[str]:
    """Ray's own validation plus syvla's conventions; returns the node directories the checkout is mounted at."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        full = prepare_config(copy.deepcopy(cfg))
        validate_config(full)
    except Exception as e:
        problems.append(f"{rel}: the Ray cluster launcher rejects it: {str(e)[:800]}")
        return set()
    roots = {target for target, source in (cfg.get("file_mounts") or {}).items()
             if (root / str(source)).resolve() == root.resolve()}
    if not roots:
        problems.append(f"{rel}: no file_mounts entry ships the repository ('.')")
    head = full["head_node_type"]
    default_image = (full.get("docker") or {}).get("worker_image") or (full.get("docker") or {}).get("image", "")
    for name, nt in full["available_node_types"].items():
        lo, hi = nt.get("min_workers", 0), nt.get("max_workers", 0)
        if name != head and not 0 <= lo <= hi:
            problems.append(f"{rel}: node type {name}: min_workers {lo} / max_workers {hi}")
        if name != head and hi < 1:
            problems.append(f"{rel}: node type {name} can never start (max_workers {hi})")
        gpus = nt.get("resources", {}).get("GPU", 0)
        setup = " ".join(nt.get("worker_setup_commands", full["worker_setup_commands"]) if name != head
                         else full["head_setup_commands"])
        image = ((nt.get("docker") or {}).get("worker_image") or default_image) if name != head else \
            (full.get("docker") or {}).get("head_image") or (full.get("docker") or {}).get("image", "")
        flavor = "gpu" if gpus else "cpu"
        if f"setup_node.sh {flavor}" not in setup:
            problems.append(f"{rel}: node type {name} ({flavor}) does not run `setup_node.sh {flavor}`")
        if image and not image.endswith(f"-{flavor}"):
            problems.append(f"{rel}: node type {name} ({flavor}) runs image {image}")
    for image in IMAGE_RE.findall(yaml.safe_dump(cfg)):
        if image != ray_version:
            problems.append(f"{rel}: image of Ray {image}, but the project pins Ray {ray_version}")
    return roots


# ---- KubeRay ----------------------------------------------------------------------------
def _unknown(rel: str, where: str, node: dict, kind: str, problems: list[str]) -> None:
    extra = sorted(set(node) - KUBERAY_FIELDS[kind])
    if extra:
        problems.append(f"{rel}: {where} has fields {extra} that KubeRay's {kind} does not")


def check_pod_template(rel: str, where: str, template: dict, claims: set[str], problems: list[str]) -> None:
    spec = (template or {}).get("spec") or {}
    containers = spec.get("containers") or []
    if not containers:
        problems.append(f"{rel}: {where} has no containers")
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for v in volumes.values():
        claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
        if claim is not None and claim not in claims:
            problems.append(f"{rel}: {where} mounts claim {claim!r}; the manifests declare {sorted(claims)}")
    for c in containers:
        if not c.get("image"):
            problems.append(f"{rel}: {where} container {c.get('name')} has no image")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                problems.append(f"{rel}: {where} mounts volume {m.get('name')!r}, which the pod does not define")
        res = c.get("resources") or {}
        gpus = str((res.get("limits") or {}).get("nvidia.com/gpu", (res.get("requests") or {}).get("nvidia.com/gpu", "0")))
        flavor = "gpu" if gpus not in ("0", "") else "cpu"
        if not str(c.get("image", "")).endswith(f"-{flavor}"):
            problems.append(f"{rel}: {where} ({flavor}) runs image {c.get('image')}")


def check_cluster_spec(rel: str, where: str, spec: dict, ray_version: str, claims: set[str], problems: list[str]) -> None:
    _unknown(rel, where, spec, "RayClusterSpec", problems)
    if str(spec.get("rayVersion")) != ray_version:
        problems.append(f"{rel}: {where}.rayVersion {spec.get('rayVersion')!r}, but the project pins Ray {ray_version}")
    if spec.get("autoscalerOptions"):
        _unknown(rel, f"{where}.autoscalerOptions", spec["autoscalerOptions"], "AutoscalerOptions", problems)
    if spec.get("authOptions"):
        _unknown(rel, f"{where}.authOptions", spec["authOptions"], "AuthOptions", problems)
    head = spec.get("headGroupSpec")
    if not isinstance(head, dict):
        problems.append(f"{rel}: {where} has no headGroupSpec")
    else:
        _unknown(rel, f"{where}.headGroupSpec", head, "HeadGroupSpec", problems)
        check_pod_template(rel, f"{where}.headGroupSpec", head.get("template"), claims, problems)
    groups = spec.get("workerGroupSpecs") or []
    names = [g.get("groupName") for g in groups]
    if len(set(names)) != len(names) or None in names:
        problems.append(f"{rel}: {where} worker groups need distinct groupNames, got {names}")
    for g in groups:
        gw = f"{where}.workerGroupSpecs[{g.get('groupName')}]"
        _unknown(rel, gw, g, "WorkerGroupSpec", problems)
        lo, n, hi = g.get("minReplicas", 0), g.get("replicas", 0), g.get("maxReplicas", 2**31 - 1)
        if not (isinstance(lo, int) and isinstance(n, int) and isinstance(hi, int) and 0 <= lo <= n <= hi and hi >= 1):
            problems.append(f"{rel}: {gw} needs 0 <= minReplicas <= replicas <= maxReplicas, maxReplicas >= 1; "
                            f"got {lo} / {n} / {hi}")
        check_pod_template(rel, gw, g.get("template"), claims, problems)
    for g in [head or {}] + groups:
        for k, v in (g.get("rayStartParams") or {}).items():
            if not isinstance(v, str):
                problems.append(f"{rel}: {where} rayStartParams.{k} must be a string (KubeRay map[string]string), got {v!r}")
    if groups and not spec.get("enableInTreeAutoscaling"):
        problems.append(f"{rel}: {where} does not enable the Ray autoscaler (enableInTreeAutoscaling)")


# ---- the repository ---------------------------------------------------------------------
def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.strip().lower()] = version.strip()
    return out


def check_repo(root: str | Path) -> list[str]:
    root = Path(root)
    problems: list[str] = []
    pins = _pins(root / "constraints.txt")
    ray_version = pins.get("ray", "")
    import ray

    if ray_version != ray.__version__:
        problems.append(f"constraints.txt pins ray {ray_version!r}, the environment has {ray.__version__}")

    # constraints for GPU nodes: the same pins, torch aside
    gpu = root / "cluster" / "constraints-gpu.txt"
    if gpu.exists():
        gpins = _pins(gpu)
        for name in sorted(set(pins) | set(gpins)):
            if name == "torch":
                if "+cpu" in gpins.get("torch", "+cpu") or gpins.get("torch") != pins.get("torch", "").split("+")[0]:
                    problems.append(f"cluster/constraints-gpu.txt: torch {gpins.get('torch')!r} must be the CUDA build "
                                    f"of constraints.txt's {pins.get('torch')!r}")
            elif pins.get(name) != gpins.get(name):
                problems.append(f"cluster/constraints-gpu.txt: {name} {gpins.get(name)!r} != constraints.txt's {pins.get(name)!r}")

    node_roots: set[str] = set()
    dockerfile = root / DOCKERFILE
    if dockerfile.exists():
        text = dockerfile.read_text()
        workdir = re.findall(r"^WORKDIR\s+(\S+)", text, re.M)
        copies = re.findall(r"^COPY\s+(?:--\S+\s+)*\.\s+(\S+)", text, re.M)
        if not workdir or not copies or workdir[-1] != copies[-1]:
            problems.append(f"{DOCKERFILE}: WORKDIR {workdir} is not where the checkout is copied {copies}")
        node_roots.update(workdir)

    # cluster launchers
    for rel in LAUNCHERS:
        if not (root / rel).exists():
            problems.append(f"{rel}: missing")
            continue
        for cfg in _load(root / rel, problems, rel):
            node_roots |= check_launcher(root, rel, cfg, ray_version, problems)

    # runtime environment
    env_vars = None
    if (root / RUNTIME_ENV).exists():
        for env in _load(root / RUNTIME_ENV, problems, RUNTIME_ENV):
            from ray.runtime_env import RuntimeEnv

            try:
                RuntimeEnv(**env)
            except Exception as e:
                problems.append(f"{RUNTIME_ENV}: Ray rejects it: {e}")
                continue
            env_vars = env.get("env_vars") or {}
            wd = root / str(env.get("working_dir", "."))
            if wd.resolve() != root.resolve():
                problems.append(f"{RUNTIME_ENV}: working_dir {env.get('working_dir')!r} is not the repository root")
            from ray._private.runtime_env.packaging import _get_excludes

            excluded = _get_excludes(root, env.get("excludes") or [])
            for d in CODE_DIRS:
                for f in sorted((root / d).rglob("*.py")):
                    if "__pycache__" in f.parts:
                        continue
                    if excluded(f) or any(excluded(root / p) for p in f.relative_to(root).parents if str(p) != "."):
                        problems.append(f"{RUNTIME_ENV}: excludes drop {f.relative_to(root)} from the job's upload")
                        break
    else:
        problems.append(f"{RUNTIME_ENV}: missing")

    # Serve config of the repository (the RayService compares against it)
    ref_serve = None
    if (root / SERVE_CONFIG).exists():
        docs = _load(root / SERVE_CONFIG, problems, SERVE_CONFIG)
        if docs:
            ref_serve = docs[0]
            check_serve_config(SERVE_CONFIG, ref_serve, problems)

    # KubeRay
    manifests = []
    for path in sorted((root / KUBERAY_DIR).glob("*.y*ml")):
        rel = str(path.relative_to(root))
        manifests += [(rel, d) for d in _load(path, problems, rel) if d]
    claims = {d["metadata"]["name"] for _, d in manifests if d.get("kind") == "PersistentVolumeClaim"}
    kinds = set()
    for rel, doc in manifests:
        kind = doc.get("kind")
        if kind == "PersistentVolumeClaim":
            continue
        if doc.get("apiVersion") != "ray.io/v1" or kind not in KUBERAY_KINDS:
            problems.append(f"{rel}: {doc.get('apiVersion')}/{kind} is not a KubeRay ray.io/v1 kind")
            continue
        kinds.add(kind)
        spec = doc.get("spec") or {}
        _unknown(rel, "spec", spec, KUBERAY_KINDS[kind], problems)
        if kind == "RayCluster":
            check_cluster_spec(rel, "spec", spec, ray_version, claims, problems)
        elif kind == "RayJob":
            check_cluster_spec(rel, "spec.rayClusterSpec", spec.get("rayClusterSpec") or {}, ray_version, claims, problems)
            if not check_entrypoints(root, rel, [spec.get("entrypoint", "")], node_roots, problems):
                problems.append(f"{rel}: entrypoint {spec.get('entrypoint')!r} runs no pipelines/*.py script")
            job_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or {}
            from ray.runtime_env import RuntimeEnv

            try:
                RuntimeEnv(**job_env)
            except Exception as e:
                problems.append(f"{rel}: Ray rejects runtimeEnvYAML: {e}")
            if env_vars is not None and (job_env.get("env_vars") or {}) != env_vars:
                problems.append(f"{rel}: runtimeEnvYAML env_vars differ from {RUNTIME_ENV}'s")
        elif kind == "RayService":
            check_cluster_spec(rel, "spec.rayClusterConfig", spec.get("rayClusterConfig") or {}, ray_version, claims,
                               problems)
            try:
                serve_cfg = yaml.safe_load(spec.get("serveConfigV2") or "")
            except yaml.YAMLError as e:
                problems.append(f"{rel}: serveConfigV2 is not YAML: {e}")
                continue
            if not isinstance(serve_cfg, dict):
                problems.append(f"{rel}: serveConfigV2 is empty")
                continue
            check_serve_config(f"{rel} serveConfigV2", serve_cfg, problems)
            if ref_serve is not None:
                compare_serve_apps(f"{rel} serveConfigV2", serve_cfg, ref_serve, problems)
    for kind in KUBERAY_KINDS:
        if kind not in kinds:
            problems.append(f"{KUBERAY_DIR}: no {kind} manifest")

    # entry points and repository paths named in launcher commands, scripts and comments
    for rel in LAUNCHERS:
        if (root / rel).exists():
            for cfg in _load(root / rel, [], rel):
                check_entrypoints(root, rel, list(_strings(cfg)), node_roots, problems)
    scanned = [*LAUNCHERS, RUNTIME_ENV, SERVE_CONFIG, *SCANNED_SCRIPTS,
               *(str(p.relative_to(root)) for p in sorted((root / KUBERAY_DIR).glob("*.y*ml"))), "cluster/README.md"]
    for rel in scanned:
        if (root / rel).exists():
            check_path_mentions(root, rel, (root / rel).read_text(), problems)
    for rel in SCANNED_SCRIPTS:
        if rel.endswith(".sh") and (root / rel).exists():
            proc = subprocess.run(["bash", "-n", str(root / rel)], stderr=subprocess.PIPE, text=True)
            if proc.returncode:
                problems.append(f"{rel}: bash syntax error: {proc.stderr.strip()}")
    return problems


if __name__ == "__main__":
    found = check_repo(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2])
    print("\n".join(found) or "cluster configs: every name resolves")
    sys.exit(1 if found else 0)
