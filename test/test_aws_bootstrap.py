"""waveforms/aws/bootstrap.sh, run for real against fake system tools in a sandbox.

PATH holds only fake ``sudo``/``id``/``dnf``/``rpm``/``apt-get``/``aws``/``curl``
(each appends its argv to a log, then acts out its effect: a package manager
"installs" runnable ffmpeg and python executables, ``aws s3 cp`` writes the
wheel) and links to the few real tools the script needs (tar, sha256sum, ...).
The tests check what was called and what ended up installed.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "waveforms" / "aws" / "bootstrap.sh"
WHEEL = "s3://bucket/wf/runs/1/code/waveforms-0.1.0-py3-none-any.whl"
WHEEL_BYTES = b"the waveforms wheel from S3"
REAL_TOOLS = ("bash", "env", "mktemp", "rm", "cp", "tar", "xz", "install", "sha256sum", "head", "basename", "cat",
              "chmod", "mkdir", "dirname", "grep")
PINNED_TF = next(line.split("==")[1].strip('", ') for line in (SCRIPT.parents[2] / "pyproject.toml").read_text().splitlines()
                 if line.strip().startswith('"tensorflow=='))

# One program plays every fake tool, by the name it is called as.
FAKE = r'''#!{python}
import hashlib, json, os, shutil, stat, sys
from pathlib import Path

name, args = Path(sys.argv[0]).name, sys.argv[1:]
root = Path(os.environ["FAKE_ROOT"])
entry = {{"tool": name, "args": args, "path": sys.argv[0]}}
if "DEBIAN_FRONTEND" in os.environ:
    entry["DEBIAN_FRONTEND"] = os.environ["DEBIAN_FRONTEND"]


def log():
    with open(os.environ["FAKE_LOG"], "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def provide(program, where=root / "usr" / "bin"):
    """Install this fake as ``program`` (it then runs, and logs, under that name)."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy(__file__, where / program)
    (where / program).chmod(0o755)


def installed_packages(packages):
    for pkg in packages:
        if pkg == "ffmpeg" or pkg.startswith("python3") and not pkg.endswith(("-pip", "-venv")):
            provide(pkg)


if name == "sudo":
    log()
    os.execvp(args[0], args)
elif name == "id":
    print(os.environ.get("FAKE_UID", "1000"))
    sys.exit(0)
elif name == "dnf":
    if args[:1] == ["list"]:
        log()
        sys.exit(0 if os.environ.get("FAKE_DNF_HAS_FFMPEG") == "1" else 1)
    if args[:1] == ["install"]:
        installed_packages([a for a in args[1:] if not a.startswith("-")])
elif name == "apt-get":
    if args[:1] == ["install"]:
        installed_packages([a for a in args[1:] if not a.startswith("-")])
elif name == "rpm":
    log()
    sys.exit(1)
elif name == "aws":
    Path(args[-1]).write_bytes(os.environ["FAKE_WHEEL_BYTES"].encode())
elif name == "curl":
    shutil.copy(os.environ["FAKE_ARCHIVE"], args[args.index("-o") + 1])
elif name == "ffmpeg":
    print("ffmpeg version fake")
elif name == "nvidia-smi":  # FAKE_GPUS GPUs
    for i in range(int(os.environ.get("FAKE_GPUS", "0"))):
        print(i if "--query-gpu=index" in args else f"GPU {{i}}: NVIDIA A10G (UUID: GPU-{{i}})")
elif name == "mountpoint":
    log()
    sys.exit(1)  # nothing mounted yet
elif name.startswith("python"):
    if args[:2] == ["-m", "venv"]:
        provide("python", Path(args[2]) / "bin")
    elif args[:3] == ["-m", "pip", "install"]:
        wheel = [a for a in args[3:] if a.endswith(".whl")]
        if wheel:
            entry["sha256"] = hashlib.sha256(Path(wheel[0]).read_bytes()).hexdigest()
    elif args[:1] == ["-c"] and "importlib.metadata" in args[1]:
        print(os.environ["FAKE_TF_VERSION"])  # what the wheel's pin installed
    elif args[:1] == ["-c"] and "list_physical_devices" in args[1]:
        gpus = int(os.environ.get("FAKE_TF_GPUS", "0"))
        print("tensorflow GPUs", gpus)
        log()
        sys.exit(0 if gpus else 1)
    elif args[:1] == ["-c"]:
        print("waveforms 0.1.0")
log()
'''


@dataclass
class Sandbox:
    root: Path
    env: dict[str, str]

    @property
    def calls(self) -> list[dict]:
        log = Path(self.env["FAKE_LOG"])
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def called(self, tool: str) -> list[list[str]]:
        return [c["args"] for c in self.calls if c["tool"] == tool]

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.env["FAKE_BASH"], str(SCRIPT), *args], env={**self.env, **env},
                              capture_output=True, text=True, timeout=120)


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    fake_bin, real_bin, root = tmp_path / "fake-bin", tmp_path / "real-bin", tmp_path / "root"
    for d in (fake_bin, real_bin, root / "usr" / "bin", root / "usr" / "local" / "bin"):
        d.mkdir(parents=True)
    for tool in REAL_TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run bootstrap.sh"
        (real_bin / tool).symlink_to(found)
    program = fake_bin / "fake"
    program.write_text(FAKE.format(python=sys.executable))
    for tool in ("sudo", "id", "apt-get", "rpm", "aws", "curl"):
        (fake_bin / tool).symlink_to(program)
    program.chmod(0o755)
    env = {
        "PATH": os.pathsep.join([str(fake_bin), str(root / "usr" / "local" / "bin"), str(root / "usr" / "bin"),
                                 str(real_bin)]),
        "HOME": str(tmp_path), "LANG": "C.UTF-8", "TMPDIR": str(tmp_path),
        "FAKE_BIN": str(fake_bin), "FAKE_ROOT": str(root), "FAKE_LOG": str(tmp_path / "calls.jsonl"),
        "FAKE_WHEEL_BYTES": WHEEL_BYTES.decode(), "FAKE_BASH": str(real_bin / "bash"), "FAKE_TF_VERSION": PINNED_TF,
        "WAVEFORMS_BOOTSTRAP_BIN_DIR": str(root / "usr" / "local" / "bin"),
    }
    return Sandbox(root, env)


def with_dnf(sandbox: Sandbox) -> None:
    (Path(sandbox.env["FAKE_BIN"]) / "dnf").symlink_to(Path(sandbox.env["FAKE_BIN"]) / "fake")


def static_ffmpeg_archive(path: Path) -> str:
    """A tar.xz laid out like the static ffmpeg builds (one top folder); returns its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for tool in ("ffmpeg", "ffprobe"):
            body = f"#!/bin/sh\necho {tool} version static\n".encode()
            info = tarfile.TarInfo(f"ffmpeg-7.0-amd64-static/{tool}")
            info.size, info.mode = len(body), 0o644
            tar.addfile(info, io.BytesIO(body))
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_shellcheck_passes():
    assert shutil.which("shellcheck"), "shellcheck is part of the dev environment"
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_debian_as_a_user_installs_ffmpeg_with_apt_and_the_wheel_in_a_venv_of_the_configured_python(sandbox):
    venv = sandbox.root / "opt" / "venv"
    proc = sandbox.run("--wheel", WHEEL, "--python", "python3.12", "--venv", str(venv))
    assert proc.returncode == 0, proc.stderr
    apt = sandbox.called("apt-get")
    assert apt[0][0] == "update" and apt[1][0] == "install"
    assert {"ffmpeg", "python3.12", "python3.12-venv"} <= set(apt[1])
    assert all(c["DEBIAN_FRONTEND"] == "noninteractive" for c in sandbox.calls if c["tool"] == "apt-get")
    assert [args[0] for args in sandbox.called("sudo")] == ["env", "env", "python3.12", str(venv / "bin/python"),
                                                             str(venv / "bin/python")]  # root work only
    (copy,) = sandbox.called("aws")
    assert copy[:3] == ["s3", "cp", "--only-show-errors"] and copy[3] == WHEEL
    assert copy[4].endswith("/waveforms-0.1.0-py3-none-any.whl")
    assert sandbox.called("python3.12") == [["-m", "venv", str(venv)]]
    venv_calls = [c for c in sandbox.calls if c["path"] == str(venv / "bin" / "python")]
    installs = [c for c in venv_calls if c["args"][:3] == ["-m", "pip", "install"]]
    assert installs[0]["args"][-2:] == ["--upgrade", "pip"]
    assert installs[1]["args"][-1] == copy[4] and installs[1]["sha256"] == hashlib.sha256(WHEEL_BYTES).hexdigest()
    assert venv_calls[-1]["args"][0] == "-c" and "import waveforms" in venv_calls[-1]["args"][1]
    assert sandbox.called("ffmpeg") == [["-version"]]  # the ffmpeg apt installed runs
    assert not Path(copy[4]).parent.exists()  # the downloaded wheel is cleaned up
    assert not sandbox.called("dnf") and not sandbox.called("curl")


def test_amazon_linux_as_root_installs_the_checked_static_ffmpeg(sandbox, tmp_path):
    with_dnf(sandbox)
    digest = static_ffmpeg_archive(tmp_path / "ffmpeg.tar.xz")
    url = "https://example.org/ffmpeg-release-amd64-static.tar.xz"
    proc = sandbox.run("--wheel", WHEEL, "--ffmpeg-url", url, "--ffmpeg-sha256", digest,
                       "--venv", str(sandbox.root / "venv"), FAKE_UID="0", FAKE_ARCHIVE=str(tmp_path / "ffmpeg.tar.xz"))
    assert proc.returncode == 0, proc.stderr
    assert "package manager: dnf" in proc.stderr
    assert not sandbox.called("sudo") and not sandbox.called("apt-get")
    installs = [args for args in sandbox.called("dnf") if args[0] == "install"]
    assert installs == [["install", "-y", "python3.11", "python3.11-pip", "tar", "xz"]]  # no ffmpeg package
    (fetch,) = sandbox.called("curl")
    assert fetch[-1] == url
    for tool in ("ffmpeg", "ffprobe"):
        installed = sandbox.root / "usr" / "local" / "bin" / tool
        assert installed.read_text() == f"#!/bin/sh\necho {tool} version static\n"
        assert os.access(installed, os.X_OK)
    assert "ffmpeg version static" in proc.stdout  # the script's final check ran the installed binary
    assert sandbox.called("python3.11") == [["-m", "venv", str(sandbox.root / "venv")]]


def test_a_wrong_ffmpeg_checksum_stops_before_anything_is_installed(sandbox, tmp_path):
    with_dnf(sandbox)
    static_ffmpeg_archive(tmp_path / "ffmpeg.tar.xz")
    proc = sandbox.run("--wheel", WHEEL, "--ffmpeg-url", "https://example.org/f.tar.xz", "--ffmpeg-sha256", "ab" * 32,
                       "--venv", str(sandbox.root / "venv"), FAKE_ARCHIVE=str(tmp_path / "ffmpeg.tar.xz"))
    assert proc.returncode == 1
    assert "checksum mismatch" in proc.stderr
    assert not (sandbox.root / "usr" / "local" / "bin" / "ffmpeg").exists()
    assert not (sandbox.root / "venv").exists() and not sandbox.called("aws")


def test_an_ffmpeg_package_is_preferred_to_the_static_build(sandbox):
    with_dnf(sandbox)
    proc = sandbox.run("--wheel", WHEEL, "--venv", str(sandbox.root / "venv"), FAKE_DNF_HAS_FFMPEG="1")
    assert proc.returncode == 0, proc.stderr
    assert ["install", "-y", "ffmpeg"] in sandbox.called("dnf")
    assert not sandbox.called("curl")
    assert sandbox.called("ffmpeg") == [["-version"]]


def test_no_ffmpeg_package_and_no_url_is_an_error(sandbox):
    with_dnf(sandbox)
    proc = sandbox.run("--wheel", WHEEL, "--venv", str(sandbox.root / "venv"))
    assert proc.returncode == 1
    assert "no ffmpeg package for this image and no --ffmpeg-url given" in proc.stderr
    assert not (sandbox.root / "venv").exists()


def test_missing_wheel_or_unknown_argument_is_an_error(sandbox):
    proc = sandbox.run()
    assert proc.returncode == 1 and "--wheel" in proc.stderr
    proc = sandbox.run("--wheel", WHEEL, "--colour", "red")
    assert proc.returncode == 1 and "unknown argument: --colour" in proc.stderr
    assert sandbox.calls == []


def test_dry_run_prints_the_commands_and_installs_nothing(sandbox):
    venv = sandbox.root / "venv"
    proc = sandbox.run("--wheel", WHEEL, "--venv", str(venv), WAVEFORMS_BOOTSTRAP_DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    printed = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert any("apt-get install" in line and "ffmpeg" in line for line in printed)
    assert any(line.endswith(f"-m venv {venv}") for line in printed)
    assert sandbox.calls == [] and not venv.exists()


def with_gpus(sandbox: Sandbox) -> None:
    for tool in ("nvidia-smi", "mount", "mountpoint"):
        (Path(sandbox.env["FAKE_BIN"]) / tool).symlink_to(Path(sandbox.env["FAKE_BIN"]) / "fake")


def gpu_args(sandbox: Sandbox, mode: str = "auto") -> list[str]:
    return ["--wheel", WHEEL, "--venv", str(sandbox.root / "venv"), "--gpu", mode,
            "--gpu-discovery", str(sandbox.root / "opt" / "bin" / "gpu-discovery.sh"),
            "--cgroup-root", str(sandbox.root / "spark-rapids-cgroup")]


def test_a_gpu_node_gets_cgroups_the_discovery_script_and_the_cuda_build_of_tensorflow(sandbox):
    with_gpus(sandbox)
    proc = sandbox.run(*gpu_args(sandbox), FAKE_GPUS="4", FAKE_TF_GPUS="4")
    assert proc.returncode == 0, proc.stderr
    assert "GPU node: 4 GPU(s)" in proc.stderr
    cgroup = sandbox.root / "spark-rapids-cgroup" / "devices"
    assert sandbox.called("mount") == [["-t", "cgroup", "-o", "devices", "cgroupv1-devices", str(cgroup)]]
    assert cgroup.is_dir() and os.stat(cgroup).st_mode & 0o777 == 0o777
    venv_python = str(sandbox.root / "venv" / "bin" / "python")
    installs = [c["args"][3:] for c in sandbox.calls if c["path"] == venv_python and c["args"][:3] == ["-m", "pip", "install"]]
    assert installs[-1] == ["--quiet", f"tensorflow[and-cuda]=={PINNED_TF}"]  # after the wheel, at its pin
    assert installs[-2][-1].endswith("waveforms-0.1.0-py3-none-any.whl")
    assert "tensorflow GPUs 4" in proc.stdout  # the final check asked TensorFlow itself

    discovery = sandbox.root / "opt" / "bin" / "gpu-discovery.sh"
    assert os.access(discovery, os.X_OK)
    found = subprocess.run([sandbox.env["FAKE_BASH"], str(discovery)], env={**sandbox.env, "FAKE_GPUS": "4"},
                           capture_output=True, text=True, timeout=30)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == {"name": "gpu", "addresses": ["0", "1", "2", "3"]}


def test_auto_on_a_node_without_gpus_skips_the_gpu_setup(sandbox):
    """The master of a GPU cluster may be a CPU type: it gets the ordinary install."""
    proc = sandbox.run(*gpu_args(sandbox))
    assert proc.returncode == 0, proc.stderr
    assert "GPU setup: no" in proc.stderr
    assert not sandbox.called("mount") and not (sandbox.root / "opt" / "bin" / "gpu-discovery.sh").exists()
    assert not [c for c in sandbox.calls if any("and-cuda" in a for a in c["args"])]


def test_a_gpu_node_where_tensorflow_sees_no_gpu_fails_the_bootstrap(sandbox):
    with_gpus(sandbox)
    proc = sandbox.run(*gpu_args(sandbox, "on"), FAKE_GPUS="1", FAKE_TF_GPUS="0")
    assert proc.returncode == 1
    assert "TensorFlow sees no GPU on this GPU node (nvidia-smi lists 1)" in proc.stderr


def test_gpu_dry_run_prints_the_gpu_setup_and_changes_nothing(sandbox):
    with_gpus(sandbox)
    proc = sandbox.run(*gpu_args(sandbox, "on"), WAVEFORMS_BOOTSTRAP_DRY_RUN="1", FAKE_GPUS="1")
    assert proc.returncode == 0, proc.stderr
    printed = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert any(" mount -t cgroup -o devices cgroupv1-devices " in line for line in printed)
    assert any("tensorflow\\[and-cuda\\]==VERSION_PINNED_BY_THE_WHEEL" in line for line in printed)
    assert not (sandbox.root / "spark-rapids-cgroup").exists() and not sandbox.called("mount")


def test_an_unknown_gpu_mode_is_an_error(sandbox):
    proc = sandbox.run("--wheel", WHEEL, "--gpu", "maybe")
    assert proc.returncode == 1 and "--gpu must be off, auto or on, got 'maybe'" in proc.stderr
    assert sandbox.calls == []


def test_an_elephas_step_gets_elephas_venv_from_the_wheel_s_own_pins(sandbox):
    """--elephas-venv: a second venv with waveforms/elephas-requirements.txt (read from the installed
    wheel), then the same wheel without its deps; on a GPU node, the CUDA build of TensorFlow in both."""
    with_gpus(sandbox)
    elephas = sandbox.root / "elephas"
    proc = sandbox.run(*gpu_args(sandbox, "on"), "--elephas-venv", str(elephas), FAKE_GPUS="1", FAKE_TF_GPUS="1")
    assert proc.returncode == 0, proc.stderr
    assert [args for args in sandbox.called("python3.11")] == [["-m", "venv", str(sandbox.root / "venv")],
                                                                ["-m", "venv", str(elephas)]]
    elephas_python = str(elephas / "bin" / "python")
    installs = [c["args"][3:] for c in sandbox.calls
                if c["path"] == elephas_python and c["args"][:3] == ["-m", "pip", "install"]]
    assert installs[0] == ["--quiet", "--upgrade", "pip"]
    assert installs[1][:2] == ["--quiet", "-r"] and installs[1][2].endswith("elephas-requirements.txt")
    assert installs[2][:2] == ["--quiet", "--no-deps"] and installs[2][2].endswith("waveforms-0.1.0-py3-none-any.whl")
    assert installs[3] == ["--quiet", f"tensorflow[and-cuda]=={PINNED_TF}"]  # the fake reports one version


def test_without_elephas_no_second_venv_is_built(sandbox):
    proc = sandbox.run("--wheel", WHEEL, "--venv", str(sandbox.root / "venv"))
    assert proc.returncode == 0, proc.stderr
    assert sandbox.called("python3.11") == [["-m", "venv", str(sandbox.root / "venv")]]
    assert "elephas venv" not in proc.stderr
