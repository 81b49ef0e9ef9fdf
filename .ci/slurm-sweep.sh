#!/usr/bin/env bash
# A tiny 2-job sweep through hydra/launcher=slurm on a real single-node SLURM cluster into the
# PostgreSQL-backed MLflow server, one job cancelled mid-fold with scancel, the same command again,
# and a check that the sweep completed with nothing lost (.ci/slurm_sweep_check.py).
#   .ci/slurm-sweep.sh          # from any shell whose `python` has fus2net's install (root: apt-get)
# Starts (and on exit removes) the tracking services and the cluster unless the caller already has
# them (.ci/run: FUS2NET_TEST_MLFLOW_URI and FUS2NET_SLURM_CLUSTER set).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1

# shellcheck source=.ci/tracking-server.sh
source .ci/tracking-server.sh
# shellcheck source=.ci/slurm-cluster.sh
source .ci/slurm-cluster.sh
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -n "${CI_SLURM:-}" ]; then _slurm_logs; fi
  if [ -n "${own_cluster:-}" ]; then stop_slurm_cluster; fi
  if [ -n "${own_tracking:-}" ]; then stop_tracking_services; fi
}
trap cleanup EXIT
if [ -z "${FUS2NET_TEST_MLFLOW_URI:-}" ]; then
  own_tracking=1
  start_tracking_services
fi
if [ -z "${FUS2NET_SLURM_CLUSTER:-}" ]; then
  own_cluster=1
  start_slurm_cluster
fi
started=$SECONDS
MLFLOW_TRACKING_URI=$FUS2NET_TEST_MLFLOW_URI python .ci/slurm_sweep_check.py
echo "CI: SLURM sweep check done in $((SECONDS - started)) s"
