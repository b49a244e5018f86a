#!/usr/bin/env bash
# EMR bootstrap action: install ffmpeg and the waveforms wheel (with its pinned
# Python dependencies) on every node, in a virtual environment the steps use.
#
# Usage: bootstrap.sh --wheel s3://bucket/path/waveforms-X-py3-none-any.whl
#                     [--python python3.11] [--venv /opt/waveforms/venv]
#                     [--ffmpeg-url URL] [--ffmpeg-sha256 HEX]
#                     [--gpu off|auto|on] [--gpu-discovery PATH] [--cgroup-root DIR]
#                     [--elephas-venv DIR]
#
# --elephas-venv (given when a step trains with elephas, whose pins of TensorFlow,
# NumPy and PySpark differ from the wheel's) also builds elephas's own venv there:
# the wheel's waveforms/elephas-requirements.txt, then the wheel without its deps.
#
# Package manager: dnf (Amazon Linux 2023, the EMR 7 image) or apt-get
# (Debian/Ubuntu); WAVEFORMS_PKG_MANAGER=dnf|apt overrides the detection.
# Amazon Linux 2023 has no ffmpeg package, so there the static build at
# --ffmpeg-url is installed to /usr/local/bin (checked against --ffmpeg-sha256
# when given); with an empty URL the script stops with an error instead.
# WAVEFORMS_BOOTSTRAP_DRY_RUN=1 prints each command instead of running it;
# WAVEFORMS_BOOTSTRAP_BIN_DIR (default /usr/local/bin) is where the static
# ffmpeg goes (tests point it, and --venv, at a sandbox).
#
# GPU nodes (--gpu on, or --gpu auto where nvidia-smi lists a GPU; the master
# of a GPU cluster may have none) also get: the cgroup v1 devices controller
# mounted under --cgroup-root (EMR 7's YARN GPU isolation needs it), Spark's GPU
# discovery script at --gpu-discovery, and the CUDA build of TensorFlow
# (tensorflow[and-cuda] at the version the wheel pinned) in the venv; the
# script then checks that TensorFlow sees the node's GPUs.
set -euo pipefail

WHEEL=""
PYTHON_BIN="python3.11"
VENV="/opt/waveforms/venv"
FFMPEG_URL=""
FFMPEG_SHA256=""
GPU="off"
GPU_DISCOVERY="/opt/waveforms/bin/gpu-discovery.sh"
CGROUP_ROOT="/spark-rapids-cgroup"
ELEPHAS_VENV=""
DRY_RUN="${WAVEFORMS_BOOTSTRAP_DRY_RUN:-0}"
BIN_DIR="${WAVEFORMS_BOOTSTRAP_BIN_DIR:-/usr/local/bin}"

die() {
    echo "bootstrap: error: $*" >&2
    exit 1
}

log() {
    echo "bootstrap: $*" >&2
}

# Run a command, or print it in dry-run mode.
run() {
    if [ "$DRY_RUN" = "1" ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --wheel) WHEEL="${2:-}"; shift 2 ;;
        --python) PYTHON_BIN="${2:-}"; shift 2 ;;
        --venv) VENV="${2:-}"; shift 2 ;;
        --ffmpeg-url) FFMPEG_URL="${2:-}"; shift 2 ;;
        --ffmpeg-sha256) FFMPEG_SHA256="${2:-}"; shift 2 ;;
        --gpu) GPU="${2:-}"; shift 2 ;;
        --gpu-discovery) GPU_DISCOVERY="${2:-}"; shift 2 ;;
        --cgroup-root) CGROUP_ROOT="${2:-}"; shift 2 ;;
        --elephas-venv) ELEPHAS_VENV="${2:-}"; shift 2 ;;
        *) die "unknown argument: $1" ;;
    esac
done

[ -n "$WHEEL" ] || die "--wheel s3://.../waveforms-*.whl is required"
[ -n "$PYTHON_BIN" ] || die "--python must name an interpreter"
case "$GPU" in
    off|auto|on) ;;
    *) die "--gpu must be off, auto or on, got '$GPU'" ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# A fresh temporary folder (a fixed placeholder name in dry-run mode).
make_tmp() {
    if [ "$DRY_RUN" = "1" ]; then
        echo "/tmp/waveforms-bootstrap.$1"
    else
        mktemp -d
    fi
}

# Prefix a command with sudo when not root.
as_root() {
    if [ -n "$SUDO" ]; then
        run "$SUDO" "$@"
    else
        run "$@"
    fi
}

detect_pkg_manager() {
    if [ -n "${WAVEFORMS_PKG_MANAGER:-}" ]; then
        echo "$WAVEFORMS_PKG_MANAGER"
    elif command -v dnf >/dev/null 2>&1; then
        echo dnf
    elif command -v apt-get >/dev/null 2>&1; then
        echo apt
    else
        die "neither dnf nor apt-get found; install ffmpeg and $PYTHON_BIN by hand"
    fi
}

install_static_ffmpeg() {
    [ -n "$FFMPEG_URL" ] || die "no ffmpeg package for this image and no --ffmpeg-url given"
    local tmp
    tmp="$(make_tmp ffmpeg)"
    log "installing static ffmpeg from $FFMPEG_URL"
    run curl --fail --silent --show-error --location --retry 5 -o "$tmp/ffmpeg.tar.xz" "$FFMPEG_URL"
    if [ -n "$FFMPEG_SHA256" ]; then
        if [ "$DRY_RUN" = "1" ]; then
            printf '+ sha256sum --check --status <<< %q\n' "$FFMPEG_SHA256  $tmp/ffmpeg.tar.xz"
        else
            echo "$FFMPEG_SHA256  $tmp/ffmpeg.tar.xz" | sha256sum --check --status \
                || die "ffmpeg archive checksum mismatch for $FFMPEG_URL"
        fi
    fi
    run tar -xJf "$tmp/ffmpeg.tar.xz" -C "$tmp" --strip-components=1
    as_root install -m 0755 "$tmp/ffmpeg" "$tmp/ffprobe" "$BIN_DIR/"
    run rm -rf "$tmp"
}

install_system_packages() {
    local pm="$1"
    case "$pm" in
        dnf)
            as_root dnf install -y "$PYTHON_BIN" "$PYTHON_BIN-pip" tar xz
            if dnf list --available ffmpeg >/dev/null 2>&1 || rpm -q ffmpeg >/dev/null 2>&1; then
                as_root dnf install -y ffmpeg
            else
                install_static_ffmpeg
            fi
            ;;
        apt)
            as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                ffmpeg "$PYTHON_BIN" "$PYTHON_BIN-venv" python3-pip
            ;;
        *)
            die "unknown package manager: $pm (expected dnf or apt)"
            ;;
    esac
}

install_python_packages() {
    local wheel_dir wheel_file
    wheel_dir="$(make_tmp wheel)"
    wheel_file="$wheel_dir/$(basename "$WHEEL")"
    case "$WHEEL" in
        s3://*) run aws s3 cp --only-show-errors "$WHEEL" "$wheel_file" ;;
        *) run cp "$WHEEL" "$wheel_file" ;;
    esac
    as_root "$PYTHON_BIN" -m venv "$VENV"
    as_root "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # The wheel's metadata pins every dependency (==), so this is reproducible.
    as_root "$VENV/bin/python" -m pip install --quiet "$wheel_file"
    if [ -n "$ELEPHAS_VENV" ]; then
        install_elephas "$wheel_file" "$wheel_dir/elephas-requirements.txt"
    fi
    run rm -rf "$wheel_dir"
}

# elephas's own venv: its pins (the list the wheel carries), then the wheel itself without deps.
install_elephas() {
    local wheel_file="$1" requirements="$2"
    log "elephas venv: $ELEPHAS_VENV"
    if [ "$DRY_RUN" = "1" ]; then
        printf '+ write %q (waveforms/elephas-requirements.txt from the wheel)\n' "$requirements"
    else
        "$VENV/bin/python" -c 'from importlib.resources import files; print(files("waveforms").joinpath("elephas-requirements.txt").read_text())' > "$requirements"
    fi
    as_root "$PYTHON_BIN" -m venv "$ELEPHAS_VENV"
    as_root "$ELEPHAS_VENV/bin/python" -m pip install --quiet --upgrade pip
    as_root "$ELEPHAS_VENV/bin/python" -m pip install --quiet -r "$requirements"
    as_root "$ELEPHAS_VENV/bin/python" -m pip install --quiet --no-deps "$wheel_file"
}

# The number of GPUs nvidia-smi lists on this node (0 without nvidia-smi).
gpu_count() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | grep -c . || true
    else
        echo 0
    fi
}

# Whether this node gets the GPU setup.
gpu_node() {
    case "$GPU" in
        on) return 0 ;;
        off) return 1 ;;
        auto) [ "$(gpu_count)" -gt 0 ] ;;
    esac
}

# Spark's GPU discovery script: one address per GPU that nvidia-smi lists.
write_gpu_discovery() {
    cat <<'DISCOVERY'
#!/usr/bin/env bash
# Spark GPU discovery (spark.executor.resource.gpu.discoveryScript), installed
# by the waveforms bootstrap: prints {"name": "gpu", "addresses": [...]} with
# nvidia-smi's index of every GPU on this node.
set -euo pipefail
addresses=""
while read -r index; do
    [ -n "$index" ] || continue
    addresses="${addresses:+$addresses, }\"${index// /}\""
done < <(nvidia-smi --query-gpu=index --format=csv,noheader)
printf '{"name": "gpu", "addresses": [%s]}\n' "$addresses"
DISCOVERY
}

setup_gpu() {
    local tmp
    log "GPU node: $(gpu_count) GPU(s)"
    as_root mkdir -p "$CGROUP_ROOT/devices"
    if ! mountpoint -q "$CGROUP_ROOT/devices" 2>/dev/null; then
        as_root mount -t cgroup -o devices cgroupv1-devices "$CGROUP_ROOT/devices"
    fi
    as_root chmod -R a+rwx "$CGROUP_ROOT"
    tmp="$(make_tmp gpu)"
    if [ "$DRY_RUN" = "1" ]; then
        printf '+ write %q (Spark GPU discovery)\n' "$tmp/gpu-discovery.sh"
    else
        write_gpu_discovery > "$tmp/gpu-discovery.sh"
    fi
    as_root mkdir -p "$(dirname "$GPU_DISCOVERY")"
    as_root install -m 0755 "$tmp/gpu-discovery.sh" "$GPU_DISCOVERY"
    run rm -rf "$tmp"
    cuda_tensorflow "$VENV"
    if [ -n "$ELEPHAS_VENV" ]; then
        cuda_tensorflow "$ELEPHAS_VENV"
    fi
}

# The CUDA build of TensorFlow in the venv $1, at the version pinned there.
cuda_tensorflow() {
    local venv="$1" tf_version
    if [ "$DRY_RUN" = "1" ]; then
        tf_version="VERSION_PINNED_BY_THE_WHEEL"
        [ "$venv" = "$VENV" ] || tf_version="VERSION_PINNED_BY_ELEPHAS_REQUIREMENTS"
    else
        tf_version="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("tensorflow"))')"
    fi
    log "installing tensorflow[and-cuda]==$tf_version in $venv"
    as_root "$venv/bin/python" -m pip install --quiet "tensorflow[and-cuda]==$tf_version"
}

check_gpu() {
    "$VENV/bin/python" -c "import tensorflow as tf; n = len(tf.config.list_physical_devices('GPU')); \
print('tensorflow GPUs', n); raise SystemExit(0 if n else 1)" \
        || die "TensorFlow sees no GPU on this GPU node (nvidia-smi lists $(gpu_count))"
}

main() {
    local pm gpu=0
    pm="$(detect_pkg_manager)"
    if gpu_node; then
        gpu=1
    fi
    log "package manager: $pm; python: $PYTHON_BIN; venv: $VENV; GPU setup: $([ "$gpu" = 1 ] && echo yes || echo no)"
    install_system_packages "$pm"
    install_python_packages
    if [ "$gpu" = 1 ]; then
        setup_gpu
    fi
    if [ "$DRY_RUN" != "1" ]; then
        ffmpeg -version | head -n 1
        "$VENV/bin/python" -c "import waveforms; print('waveforms', waveforms.__version__)"
        if [ "$gpu" = 1 ]; then
            check_gpu
        fi
    fi
    log "done"
}

main
