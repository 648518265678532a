#!/usr/bin/env bash
# One-command runs on every worker of a Cloud TPU VM slice (no manual ssh per worker).
#
#   scripts/launch_tpu_vm.sh [--dry-run] [options] <action> <tpu-name> <zone> [-- <train flags>...]
#
# actions:
#   up       create-or-reuse, sync, install, start, then stream worker 0's log (the usual one)
#   create   create the slice unless it exists (--accelerator_type, --version, --project, --spot)
#   sync     copy this checkout (without .git and runs/) to ~/atomsearch_jax on every worker
#   install  pip install -e '.[tpu]' on every worker
#   start    start `python3 -m atomsearch_jax.<module> --jax_distributed <train flags>` on every worker at
#            once (JAX discovers the coordinator and process ids on TPU); logs to ~/atomsearch_run.log
#   stream   follow worker 0's log (process 0 alone prints progress)
#   stop     SIGTERM the run on every worker: it checkpoints and exits (rerun `start` to resume)
#   delete   delete the slice
# options: --accelerator_type=v4-64 --version=tpu-ubuntu2204-base --project=P --spot --module=train
#          --dry-run (print every command instead of running it)
# Flags after `--` are passed through to the entry point, quoted so spaces and quotes survive the remote
# shell. Use a gs:// --workdir: every worker must see the same checkpoint directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/launch_common.sh"

accelerator=v4-8; version=tpu-ubuntu2204-base; project=""; spot=0; module=train
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --accelerator_type=*) accelerator=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --spot) spot=1 ;;
    --module=*) module=${1#*=} ;;
    *) die "unknown option $1" ;;
  esac
  shift
done
[[ $# -ge 3 ]] || die "usage: $0 [options] <up|create|sync|install|start|stream|stop|delete> <tpu-name> <zone> [-- flags]"
action=$1; tpu=$2; zone=$3; shift 3
[[ $# -eq 0 || "$1" == "--" ]] || die "entry-point flags go after '--' (got $1)"
[[ $# -gt 0 ]] && shift
entry_flags=("$@")

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
[[ -n "$project" ]] && where+=(--project="$project")
remote_dir='~/atomsearch_jax'
log='~/atomsearch_run.log'
pidfile='~/atomsearch_run.pid'

create() {
  if [[ "$DRY_RUN" != 1 ]] && "${gcloud_tpu[@]}" describe "$tpu" "${where[@]}" >/dev/null 2>&1; then
    echo "reusing existing TPU VM $tpu"
    return
  fi
  local extra=()
  [[ "$spot" == 1 ]] && extra+=(--spot)
  run "${gcloud_tpu[@]}" create "$tpu" "${where[@]}" --accelerator-type="$accelerator" --version="$version" "${extra[@]}"
}

sync_code() {
  local repo tarball
  repo=$(cd "$here/.." && pwd)
  tarball=${TMPDIR:-/tmp}/atomsearch_jax_$$.tgz
  run tar -C "$repo" --exclude=.git --exclude=runs --exclude=.ci/venv -czf "$tarball" .
  run "${gcloud_tpu[@]}" scp "$tarball" "$tpu:atomsearch_jax.tgz" "${where[@]}" --worker=all
  on_all "mkdir -p $remote_dir && tar -C $remote_dir -xzf ~/atomsearch_jax.tgz"
}

on_all() { run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=all --command="$1"; }

install() { on_all "cd $remote_dir && python3 -m pip install -q -e '.[tpu]'"; }

start() {
  local cmd
  cmd="python3 -m atomsearch_jax.$module --jax_distributed"
  [[ ${#entry_flags[@]} -gt 0 ]] && cmd+=" $(quote "${entry_flags[@]}")"
  on_all "cd $remote_dir && (nohup $cmd > $log 2>&1 & echo \$! > $pidfile)"
}

stream() { run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=0 --command="tail -n +1 -F $log"; }

stop() { on_all "test -f $pidfile && kill -TERM \$(cat $pidfile) || true"; }

case "$action" in
  up) create; sync_code; install; start; stream ;;
  create) create ;;
  sync) sync_code ;;
  install) install ;;
  start) start ;;
  stream) stream ;;
  stop) stop ;;
  delete) run "${gcloud_tpu[@]}" delete "$tpu" "${where[@]}" --quiet ;;
  *) die "unknown action $action" ;;
esac
