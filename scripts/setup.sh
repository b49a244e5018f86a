#!/usr/bin/env bash
# Install what waveforms needs on Debian/Ubuntu: system packages, then .venv.
# Idempotent: a stamp keyed on pyproject.toml and this script skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
# Openly licensed music for the offline demo mirror (Ogg Vorbis files).
[ -d /usr/share/games/hyperrogue ] || [ -n "$(ls /usr/share/hyperrogue* 2>/dev/null)" ] || need_apt+=(hyperrogue-music)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
stamp=.venv/.setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
echo "$want" > "$stamp"
echo "setup: .venv ready"
