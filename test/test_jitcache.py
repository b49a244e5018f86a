"""Where numba caches the fast generator's kernels (:func:`waveforms.model.fastgen.configure_cache`)."""
import os
import sys

import pytest

from waveforms.model import fastgen


@pytest.fixture
def no_cache_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    numba = sys.modules.get("numba")
    if numba is not None:
        monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)
    return tmp_path


def read_only(monkeypatch, package):
    """``package`` read-only: by its mode, and for root (who may write anyway) by os.access too."""
    package.chmod(0o555)
    real = os.access
    monkeypatch.setattr(fastgen.os, "access",
                        lambda path, mode: False if str(path).startswith(str(package)) and mode & os.W_OK
                        else real(path, mode))


def test_a_read_only_package_caches_under_the_user_cache_folder(no_cache_env, monkeypatch):
    package = no_cache_env / "pkg"
    package.mkdir()
    read_only(monkeypatch, package)
    chosen = fastgen.configure_cache(package)
    package.chmod(0o755)
    expected = no_cache_env / "xdg" / "waveforms" / "numba"
    assert chosen == str(expected) == os.environ["NUMBA_CACHE_DIR"]
    assert expected.is_dir()
    if "numba" in sys.modules:
        assert sys.modules["numba"].config.CACHE_DIR == str(expected)


def test_a_writable_package_keeps_numba_s_own_cache_next_to_the_source(no_cache_env):
    package = no_cache_env / "pkg"
    package.mkdir()
    assert fastgen.configure_cache(package) == ""
    assert "NUMBA_CACHE_DIR" not in os.environ


def test_a_folder_the_user_chose_is_kept(no_cache_env, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(no_cache_env / "mine"))
    package = no_cache_env / "pkg"
    package.mkdir()
    read_only(monkeypatch, package)
    assert fastgen.configure_cache(package) == str(no_cache_env / "mine")
    package.chmod(0o755)


def test_every_fast_generator_kernel_is_cached_on_disk():
    from numba.core.caching import FunctionCache
    from numba.core.registry import CPUDispatcher

    from waveforms.model import fastgen

    kernels = [v for v in vars(fastgen).values() if isinstance(v, CPUDispatcher)]
    assert len(kernels) >= 5
    assert all(isinstance(k._cache, FunctionCache) for k in kernels), [k.__name__ for k in kernels]


LOAD_STATS = """
from waveforms import model
from waveforms.model import fastgen, sampling
sampling.generate(model.build("small"), 64, seed=0)
stats = fastgen._run_blocks.stats
print(len(stats.cache_hits), len(stats.cache_misses))
"""


@pytest.mark.slow  # two processes load TensorFlow, and the kernels compile once (about a minute here)
def test_warm_kernels_leaves_a_cache_that_a_later_processs_first_generation_loads(tmp_path):
    import subprocess

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = lambda code: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,  # noqa: E731
                                      timeout=600)
    warm = run("from waveforms.model.sampling import warm_kernels; warm_kernels()")
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert list((tmp_path / "numba").rglob("fastgen._run_blocks-*.nbi"))
    later = run(LOAD_STATS)  # another model's size: the same kernel types
    assert later.returncode == 0, later.stderr[-3000:]
    hits, misses = map(int, later.stdout.split()[-2:])
    assert (hits, misses) == (1, 0)
