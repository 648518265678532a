# Shared by the launch scripts (sourced): dry-run aware command execution and safe quoting.
#
# run CMD...      runs CMD, or with DRY_RUN=1 prints it (one line, shell-quoted) instead.
# quote ARGS...   ARGS as one string a remote shell splits back into exactly ARGS.

DRY_RUN=${DRY_RUN:-0}

quote() {
  local out="" arg
  for arg in "$@"; do out+="$(printf '%q' "$arg") "; done
  printf '%s' "${out% }"
}

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "+ $(quote "$@")"
  else
    "$@"
  fi
}

die() { echo "error: $*" >&2; exit 2; }
