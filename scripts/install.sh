#!/usr/bin/env bash
# Set up edge-repair in ./.venv on a fresh machine. `--test` adds the test dependencies.
# On Linux it also tries to install a system OpenBLAS (MLX's CPU wheel links a slow reference
# BLAS; edge-repair loads OpenBLAS in its place when one is present). Without root it only hints.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

if [ "$(uname -s)" = Linux ] && ! ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[install] installing OpenBLAS (libopenblas0-pthread) for fast CPU linear algebra" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread) >/dev/null 2>&1 \
      || echo "[install] could not install OpenBLAS; edge-repair still works, ~10x slower" >&2
  else
    echo "[install] hint: install your distribution's OpenBLAS (e.g. libopenblas0) for ~10x faster CPU runs" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
echo "[install] done: .venv/bin/edge-repair" >&2
