#!/usr/bin/env bash
# Install syvla on a cluster node or into an image: the launchers' setup commands
# (cluster/aws.yaml, cluster/gcp.yaml) and cluster/Dockerfile call it.
#
#   bash cluster/setup_node.sh [cpu|gpu|auto]     (default: $SYVLA_TORCH, else auto)
#
# cpu: ../constraints.txt -- torch==2.13.0+cpu from the PyTorch CPU index, no CUDA wheels.
# gpu: cluster/constraints-gpu.txt -- torch==2.13.0 from PyPI (its CUDA build) and the
#      registry's torchvision 0.28.0, whose C++ ops then load (they need libtorch_cuda).
# auto: gpu when `nvidia-smi -L` lists a GPU, else cpu.
# The chosen pins are copied to $SYVLA_CONSTRAINTS_AT (default /opt/syvla/constraints.txt),
# which cluster/runtime_env.yaml exports as PIP_CONSTRAINT, so later pip installs on the
# node keep the same torch.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FLAVOR="${1:-${SYVLA_TORCH:-auto}}"
PY="${SYVLA_PYTHON:-python}"
DEST="${SYVLA_CONSTRAINTS_AT:-/opt/syvla/constraints.txt}"

if [ "$FLAVOR" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then FLAVOR=gpu; else FLAVOR=cpu; fi
fi
case "$FLAVOR" in
  cpu) CONSTRAINTS="$ROOT/constraints.txt"; INDEX=(--extra-index-url https://download.pytorch.org/whl/cpu) ;;
  gpu) CONSTRAINTS="$ROOT/cluster/constraints-gpu.txt"; INDEX=() ;;
  *) echo "usage: $0 [cpu|gpu|auto]" >&2; exit 2 ;;
esac
echo "[setup_node] $FLAVOR node: installing $ROOT with $CONSTRAINTS"

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
$SUDO mkdir -p "$(dirname "$DEST")"
$SUDO cp "$CONSTRAINTS" "$DEST"

export PIP_CONSTRAINT="$CONSTRAINTS" DS_BUILD_OPS=0 PIP_DISABLE_PIP_VERSION_CHECK=1
TORCH_PIN="$(grep -E '^torch==' "$CONSTRAINTS")"
# torch first: deepspeed's sdist then builds against it instead of pulling another.
"$PY" -m pip install -q "${INDEX[@]}" "$TORCH_PIN"
"$PY" -m pip install -q "${INDEX[@]}" -e "$ROOT"
# Offscreen GL for Meta-World cameras (apt needs root).
$SUDO bash "$ROOT/cluster/install_system_deps.sh"
"$PY" -c "import syvla, torch; print('[setup_node] torch', torch.__version__, 'cuda', torch.cuda.is_available())"
