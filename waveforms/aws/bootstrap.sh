#!/usr/bin/env bash
# EMR bootstrap action: install ffmpeg and the waveforms wheel (with its pinned
# Python dependencies) on every node, in a virtual environment the steps use.
#
# Usage: bootstrap.sh --wheel s3://bucket/path/waveforms-X-py3-none-any.whl
#                     [--python python3.11] [--venv /opt/waveforms/venv]
#                     [--ffmpeg-url URL] [--ffmpeg-sha256 HEX]
#
# Package manager: dnf (Amazon Linux 2023, the EMR 7 image) or apt-get
# (Debian/Ubuntu); WAVEFORMS_PKG_MANAGER=dnf|apt overrides the detection.
# Amazon Linux 2023 has no ffmpeg package, so there the static build at
# --ffmpeg-url is installed to /usr/local/bin (checked against --ffmpeg-sha256
# when given); with an empty URL the script stops with an error instead.
# WAVEFORMS_BOOTSTRAP_DRY_RUN=1 prints each command instead of running it;
# WAVEFORMS_BOOTSTRAP_BIN_DIR (default /usr/local/bin) is where the static
# ffmpeg goes (tests point it, and --venv, at a sandbox).
set -euo pipefail

WHEEL=""
PYTHON_BIN="python3.11"
VENV="/opt/waveforms/venv"
FFMPEG_URL=""
FFMPEG_SHA256=""
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
        *) die "unknown argument: $1" ;;
    esac
done

[ -n "$WHEEL" ] || die "--wheel s3://.../waveforms-*.whl is required"
[ -n "$PYTHON_BIN" ] || die "--python must name an interpreter"

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
    run rm -rf "$wheel_dir"
}

main() {
    local pm
    pm="$(detect_pkg_manager)"
    log "package manager: $pm; python: $PYTHON_BIN; venv: $VENV"
    install_system_packages "$pm"
    install_python_packages
    if [ "$DRY_RUN" != "1" ]; then
        ffmpeg -version | head -n 1
        "$VENV/bin/python" -c "import waveforms; print('waveforms', waveforms.__version__)"
    fi
    log "done"
}

main
