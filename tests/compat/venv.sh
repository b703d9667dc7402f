#!/usr/bin/env bash
# Idempotent: creates <DIR>/.venv and installs <DIR>/requirements.txt (pinned).
# Usage: tests/compat/venv.sh DIR. Re-running is cheap: pip is skipped while requirements.txt is unchanged.
set -euo pipefail
here="$(cd "${1:?usage: venv.sh DIR}" && pwd)"
venv="$here/.venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

py="${PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then py="$cand"; break; fi
  done
fi
[ -n "$py" ] || { echo "setup.sh: no python3 found" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup.sh: $venv is up to date"
  exit 0
fi

"$venv/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req"
echo "$want" > "$stamp"
echo "setup.sh: installed requirements into $venv"
