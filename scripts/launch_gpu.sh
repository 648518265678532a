#!/usr/bin/env bash
# Multi-node GPU runs (jax[cuda]): one process per host, all started at once.
#
#   scripts/launch_gpu.sh [--dry-run] --hosts=h0,h1,... [--port=8476] [--dir=~/atomsearch_jax] [--module=train] \
#       [--python=python3] -- <entry-point flags>
#   scripts/launch_gpu.sh [--dry-run] --slurm [--module=train] -- <entry-point flags>     # inside an allocation
#
# --hosts: ssh to each host and start the entry point with --coordinator_address=<first host>:<port>
# --num_processes=<hosts> --process_id=<i> (logs: <dir>/atomsearch_run.log on each host; the code must
# already be at --dir, e.g. a shared filesystem, with `pip install -e '.[cuda]'` done).
# --slurm: `srun --ntasks-per-node=1` the entry point with --jax_distributed (JAX reads SLURM's variables).
# Flags after `--` reach the entry point quoted so spaces and quotes survive the remote shell.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/launch_common.sh"

hosts=""; port=8476; dir='~/atomsearch_jax'; module=train; python=python3; slurm=0
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --hosts=*) hosts=${1#*=} ;;
    --port=*) port=${1#*=} ;;
    --dir=*) dir=${1#*=} ;;
    --module=*) module=${1#*=} ;;
    --python=*) python=${1#*=} ;;
    --slurm) slurm=1 ;;
    *) die "unknown option $1 (entry-point flags go after '--')" ;;
  esac
  shift
done
[[ $# -gt 0 ]] && shift
entry_flags=("$@")

if [[ "$slurm" == 1 ]]; then
  [[ -z "$hosts" ]] || die "--slurm and --hosts are exclusive"
  run srun --ntasks-per-node=1 "$python" -m "atomsearch_jax.$module" --jax_distributed "${entry_flags[@]}"
  exit 0
fi
[[ -n "$hosts" ]] || die "give --hosts=h0,h1,... or --slurm"
IFS=, read -r -a host_list <<< "$hosts"
n=${#host_list[@]}
coordinator="${host_list[0]}:$port"
for i in "${!host_list[@]}"; do
  cmd=$(quote "$python" -m "atomsearch_jax.$module" --coordinator_address="$coordinator" --num_processes="$n" \
        --process_id="$i" "${entry_flags[@]}")
  run ssh "${host_list[$i]}" "cd $dir && (nohup $cmd > atomsearch_run.log 2>&1 &)"
done
echo "started $n processes; process 0 (${host_list[0]}) logs progress to $dir/atomsearch_run.log" >&2
