#!/usr/bin/env bash
# Run a pipeline as a Ray job on this machine, the way it runs on a cluster:
#
#   cluster/local_job.sh pipelines/pretrain.py --max_steps 200
#
# Starts a head (`ray start --head`, dashboard and job API on 127.0.0.1) with token auth on
# (RAY_AUTH_MODE=token, the token in ~/.ray/auth_token, made here once: Ray's GCS and raylet ports
# listen on every interface, so without a token anyone on the network could run code on this
# machine) when none answers on $SYVLA_RAY_PORT, then submits
# `python <pipeline> <flags>` with `ray job submit` and follows its log. The job runs in this
# checkout (relative outputs such as checkpoints/ land here) with the env_vars of
# cluster/runtime_env.yaml. The head keeps running for the next job; `ray stop` ends it.
# Other clients on this machine (`ray job logs`, `ray status`) need RAY_AUTH_MODE=token too; they
# read the same token file (cluster/README.md).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 pipelines/<name>.py [flags...]" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"          # the head's job drivers find the project's python first
export RAY_AUTH_MODE=token
ray get-auth-token --generate >/dev/null   # ~/.ray/auth_token: kept if it exists, else made (mode 600)
PORT="${SYVLA_RAY_PORT:-6380}"
DASHBOARD_PORT="${SYVLA_DASHBOARD_PORT:-8266}"
TEMP_DIR="${SYVLA_RAY_TEMP_DIR:-/tmp/syvla-ray}"   # its own session dir: other ray.init() calls never find this head

if ! ray status --address "127.0.0.1:$PORT" >/dev/null 2>&1; then
  ray start --head --node-ip-address 127.0.0.1 --port "$PORT" \
    --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
    --dashboard-agent-listen-port "${SYVLA_AGENT_PORT:-52366}" \
    --num-cpus "${SYVLA_NUM_CPUS:-$(nproc)}" --temp-dir "$TEMP_DIR" --disable-usage-stats
fi

# env_vars of cluster/runtime_env.yaml, without working_dir: the job runs in place.
RUNTIME_ENV="$(python - <<'PY'
import json, yaml
env = yaml.safe_load(open("cluster/runtime_env.yaml"))
env.pop("working_dir", None)
env.pop("excludes", None)
env["env_vars"].pop("PIP_CONSTRAINT", None)   # a cluster-node path; the Makefile sets it here
env["env_vars"].pop("SYVLA_OUTPUT_DIR", None)  # the job runs in place: relative outputs land in this checkout
print(json.dumps(env))
PY
)"
ENTRYPOINT="cd $(printf '%q' "$ROOT") && python$(printf ' %q' "$@")"
# `ray job submit` shell-quotes each word after --: one bash -c keeps the cd and the &&.
exec ray job submit --address "http://127.0.0.1:$DASHBOARD_PORT" --runtime-env-json "$RUNTIME_ENV" -- bash -c "$ENTRYPOINT"
