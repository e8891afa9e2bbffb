#!/usr/bin/env bash
# Set up a development environment in .venv: torch (pinned), zsgm editable with its test extras,
# every first-party plugin under plugins/ and the example third-party plugin, all editable.
# Usage: bash scripts/setup.sh            (idempotent; VENV=path to choose another location)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
# torch 2.14.1 + torchvision 0.29.1 install together (open_clip imports torchvision).
$PIP install -q "torch==2.14.1" "torchvision==0.29.1"
args=(-e ".[test]")
for plugin in plugins/*/; do
  [ -f "$plugin/pyproject.toml" ] && args+=(-e "$plugin")
done
args+=(-e examples/zsgm-plugin-example)
$PIP install -q "${args[@]}"
echo "zsgm environment ready in $VENV"
