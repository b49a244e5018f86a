"""aws/bootstrap.sh: shellcheck-clean, and its dry run picks the right package manager."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "aws" / "bootstrap.sh"
WHEEL = "s3://bucket/wf/runs/1/code/waveforms-0.1.0-py3-none-any.whl"


def dry_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**os.environ, "WAVEFORMS_BOOTSTRAP_DRY_RUN": "1", **env},
        capture_output=True, text=True, timeout=60,
    )


def commands(proc: subprocess.CompletedProcess) -> list[str]:
    """The printed commands, without a leading sudo (the test may run as root or not)."""
    return [line[2:].removeprefix("sudo ") for line in proc.stdout.splitlines() if line.startswith("+ ")]


def test_shellcheck_passes():
    assert shutil.which("shellcheck"), "shellcheck is part of the dev environment"
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(not shutil.which("apt-get"), reason="detection test needs a Debian/Ubuntu host")
def test_dry_run_on_debian_uses_apt_and_installs_the_wheel_in_a_venv():
    proc = dry_run("--wheel", WHEEL)
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc)
    assert "package manager: apt" in proc.stderr
    assert cmds[1].startswith("env DEBIAN_FRONTEND=noninteractive apt-get install -y -q ffmpeg python3.11 ")
    assert cmds[2] == f"aws s3 cp --only-show-errors {WHEEL} /tmp/waveforms-bootstrap.wheel/waveforms-0.1.0-py3-none-any.whl"
    assert cmds[3] == "python3.11 -m venv /opt/waveforms/venv"
    assert cmds[-2] == "/opt/waveforms/venv/bin/python -m pip install --quiet /tmp/waveforms-bootstrap.wheel/waveforms-0.1.0-py3-none-any.whl"
    assert not any("dnf" in c or "curl" in c for c in cmds)


def test_dry_run_on_amazon_linux_uses_dnf_and_the_static_ffmpeg():
    proc = dry_run("--wheel", WHEEL, "--ffmpeg-url", "https://example.org/ffmpeg.tar.xz",
                   "--ffmpeg-sha256", "ab" * 32, "--venv", "/opt/wf", WAVEFORMS_PKG_MANAGER="dnf")
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc)
    assert cmds[0] == "dnf install -y python3.11 python3.11-pip tar xz"
    assert any(c.startswith("curl ") and c.endswith("https://example.org/ffmpeg.tar.xz") for c in cmds)
    assert any(c.startswith("sha256sum --check") and "ab" * 32 in c for c in cmds)
    assert "install -m 0755 /tmp/waveforms-bootstrap.ffmpeg/ffmpeg /tmp/waveforms-bootstrap.ffmpeg/ffprobe /usr/local/bin/" in cmds
    assert "/opt/wf/bin/python -m pip install --quiet /tmp/waveforms-bootstrap.wheel/waveforms-0.1.0-py3-none-any.whl" in cmds
    assert not any("apt-get" in c for c in cmds)


def test_missing_wheel_or_unknown_argument_is_an_error():
    proc = dry_run()
    assert proc.returncode == 1 and "--wheel" in proc.stderr
    proc = dry_run("--wheel", WHEEL, "--colour", "red")
    assert proc.returncode == 1 and "unknown argument: --colour" in proc.stderr


@pytest.mark.skipif(bool(shutil.which("dnf")), reason="a host with dnf may have an ffmpeg package")
def test_no_ffmpeg_package_and_no_url_is_an_error():
    proc = dry_run("--wheel", WHEEL, "--ffmpeg-url", "", WAVEFORMS_PKG_MANAGER="dnf")
    assert proc.returncode == 1
    assert "no ffmpeg package for this image and no --ffmpeg-url given" in proc.stderr
