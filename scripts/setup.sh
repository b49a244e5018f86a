#!/usr/bin/env bash
# Install what waveforms needs on Debian/Ubuntu: system packages, then .venv.
# Idempotent: a stamp keyed on pyproject.toml and this script skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
# The studio's browser tests: Debian's Chromium and its driver; npm installs the app's JavaScript libraries.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# Openly licensed music for the offline demo mirror (Ogg Vorbis files).
[ -n "$(ls /usr/share/hyperrogue/music/*.ogg 2>/dev/null)" ] || need_apt+=(hyperrogue-music)
# A second soundtrack for the memorisation test (Pingus, GPL-2+, Impulse Tracker modules; 12 MB).
[ -n "$(ls /usr/share/games/pingus/data/music/*.it 2>/dev/null)" ] || need_apt+=(pingus-data)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# PySpark 3.5.6 (with its py4j), the Spark of every EMR 7.x release, in a folder
# of its own: test/test_spark35.py puts it first on PYTHONPATH and as SPARK_HOME,
# as EMR's spark-submit does; the venv keeps its pinned pyspark.
SPARK35=pyspark==3.5.6
install_spark35() {
  [ -d .spark35/pyspark-3.5.6.dist-info ] && return 0
  echo "setup: $SPARK35 into .spark35"
  rm -rf .spark35 .spark35.partial
  .venv/bin/python -m pip install -q --no-warn-conflicts --target .spark35.partial "$SPARK35"
  mv .spark35.partial .spark35
}

# The elephas engine's own environment: elephas 7.3.0 pins TensorFlow < 2.20, NumPy < 2 and
# PySpark <= 4.0, so it gets .elephas with the pins of waveforms/elephas-requirements.txt and this
# checkout (editable, --no-deps); `waveforms train --engine elephas` hands its runs to it. With its
# test runner, for the elephas tests (test/elephas_engine), which the main suite runs in it.
ELEPHAS_TEST="pytest==9.2.0 psutil==7.2.2"
install_elephas() {
  local want_e
  want_e=$(cat waveforms/elephas-requirements.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
  [ -f .elephas/.setup-stamp ] && [ "$(cat .elephas/.setup-stamp)" = "$want_e" ] && return 0
  echo "setup: elephas's environment in .elephas"
  rm -rf .elephas
  "$PY" -m venv .elephas
  .elephas/bin/python -m pip install -q --upgrade pip
  # shellcheck disable=SC2086  # ELEPHAS_TEST is a list of requirements
  .elephas/bin/python -m pip install -q -r waveforms/elephas-requirements.txt $ELEPHAS_TEST
  .elephas/bin/python -m pip install -q --no-deps -e .
  tf_build .elephas
  echo "$want_e" > .elephas/.setup-stamp
}

# TensorFlow's build for this machine in the environment $1, at the version pip resolved there: with an
# NVIDIA GPU (`nvidia-smi -L` lists one), tensorflow[and-cuda], whose pip-installed CUDA and cuDNN
# libraries TensorFlow finds by itself; without one, the CPU build, the same API without the CUDA
# plugins, whose registration prints pages of C++ log lines at every import.
tf_build() {
  local py="$1/bin/python" tf
  tf=$("$py" -c 'import importlib.metadata as m; print(m.version("tensorflow"))' 2>/dev/null || true)
  [ -n "$tf" ] || return 0
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU: tensorflow[and-cuda]==$tf in $1"
    "$py" -m pip install -q "tensorflow[and-cuda]==$tf"
    "$py" -c 'import tensorflow as tf; gpus = tf.config.list_physical_devices("GPU"); print("setup: TensorFlow sees", gpus or "no GPU (check the NVIDIA driver)")' 2>/dev/null || true
  else
    echo "setup: no NVIDIA GPU: tensorflow-cpu==$tf in $1"
    "$py" -m pip uninstall -q -y tensorflow
    "$py" -m pip install -q --force-reinstall --no-deps "tensorflow-cpu==$tf"  # rewrite the files the uninstall removed
  fi
}

# The studio's JavaScript libraries, from the npm registry, served locally (no CDN at run time).
web=waveforms/serve/web vendor=waveforms/serve/static/vendor
if [ ! -f "$vendor/uPlot.iife.min.js" ]; then
  (cd "$web" && npm ci --no-audit --no-fund --silent)
  mkdir -p "$vendor"
  cp "$web/node_modules/uplot/dist/uPlot.iife.min.js" "$web/node_modules/uplot/dist/uPlot.min.css" "$vendor/"
fi

# The fast generator's numba kernels, compiled once into their on-disk cache: without it a fresh
# clone's first generation (the demo's first training preview) compiles them inside the run
# (39-50 s against 2-3 s from the cache, measured on the shared 2-core machine). Skipped while the
# cache is newer than the source.
warm_kernels() {
  local nbi
  for nbi in waveforms/model/__pycache__/fastgen._run_blocks-*.nbi; do
    [ "$nbi" -nt waveforms/model/fastgen.py ] && return 0
  done
  echo "setup: compiling the fast generator's kernels into numba's cache"
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -c 'from waveforms.model.sampling import warm_kernels; warm_kernels()'
}

PY=${PYTHON:-python3}
stamp=.venv/.setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  install_spark35
  install_elephas
  warm_kernels
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,docs]"
tf_build .venv
install_spark35
install_elephas
warm_kernels
echo "$want" > "$stamp"
echo "setup: .venv ready"
