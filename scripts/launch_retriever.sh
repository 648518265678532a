#!/usr/bin/env bash
# Starts the retrieval server (atomsearch_jax.serve_retriever) for a run's rollouts, locally or on a host.
#
#   scripts/launch_retriever.sh [--dry-run] [--host=<ssh host>] [--dir=~/atomsearch_jax] [--port=8000] \
#       --index_dir=<index> [-- <more serve_retriever flags>]
#
# Binds 0.0.0.0:<port> so every training host can reach it; point the run at it with
# --config.search.retriever=searchr1:http://<host>:<port>. Without --host it runs here in the foreground.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/launch_common.sh"

host=""; dir='~/atomsearch_jax'; port=8000; index_dir=""; python=python3
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --host=*) host=${1#*=} ;;
    --dir=*) dir=${1#*=} ;;
    --port=*) port=${1#*=} ;;
    --index_dir=*) index_dir=${1#*=} ;;
    --python=*) python=${1#*=} ;;
    *) die "unknown option $1" ;;
  esac
  shift
done
[[ $# -gt 0 ]] && shift
[[ -n "$index_dir" ]] || die "--index_dir is required (build one with python -m atomsearch_jax.build_index)"
server=("$python" -m atomsearch_jax.serve_retriever --index_dir="$index_dir" --host=0.0.0.0 --port="$port" "$@")
if [[ -z "$host" ]]; then
  run "${server[@]}"
else
  run ssh "$host" "cd $dir && (nohup $(quote "${server[@]}") > retriever.log 2>&1 &)"
  echo "retriever on $host:$port; use --config.search.retriever=searchr1:http://$host:$port" >&2
fi
