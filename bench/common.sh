# Sourced by the bench/*/run.sh scripts (after they set HERE and ROOT): what they share in shell.
# The Python side is bench/common.py.

# scratch_dir VAR DEFAULT: sets SCRATCH to $VAR (or DEFAULT), created and made absolute. A
# scratch directory inside the repository ($ROOT) is refused (exit 2): results and caches there
# would end up in commits.
scratch_dir() {
  local var=$1 default=$2
  SCRATCH=${!var:-$default}
  mkdir -p "$SCRATCH"
  SCRATCH=$(cd "$SCRATCH" && pwd)
  case "$SCRATCH/" in
    "$ROOT"/*) echo "$var must be outside the repository" >&2; exit 2 ;;
  esac
}
