"""Config files, flags and --set overrides."""
import json
import subprocess
import sys

import pytest

from waveforms import config
from waveforms.cli import main


def test_precedence_defaults_file_flags_sets(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nsteps = 50\nbatch_size = 3\npreset = "tiny"\n[generate]\nseconds = 9.0\n')
    cfg = config.load("train", f, ["batch_size=5", "clip_norm=0.5"], {"steps": 70, "preset": None})
    assert (cfg.steps, cfg.batch_size, cfg.preset, cfg.clip_norm) == (70, 5, "tiny", 0.5)
    assert cfg.learning_rate == config.TrainConfig().learning_rate
    assert config.load("generate", f).seconds == 9.0


def test_types_are_coerced():
    cfg = config.load("scrape", sets=["genres=Rock, Jazz", "fetch_licence=no", "requests_per_second=2"])
    assert cfg.genres == ["Rock", "Jazz"] and cfg.fetch_licence is False and cfg.requests_per_second == 2.0
    cfg = config.load("transform", sets=['spark_conf={"spark.executor.memory": "2g"}'])
    assert cfg.spark_conf == {"spark.executor.memory": "2g"}


@pytest.mark.parametrize(
    "sets, message",
    [
        (["stpes=3"], "unknown key 'stpes'"),
        (["steps=many"], "cannot read 'many' as int"),
        (["steps"], "expects key=value"),
        (["fresh=maybe"], "as bool"),
    ],
)
def test_bad_overrides_are_clear_errors(sets, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load("train", sets=sets)


def test_bad_files(tmp_path):
    bad_key = tmp_path / "a.toml"
    bad_key.write_text("[train]\nwindow_size = 3\n")
    with pytest.raises(config.ConfigError, match="unknown key 'window_size'.*known keys"):
        config.load("train", bad_key)
    bad_table = tmp_path / "b.toml"
    bad_table.write_text("[training]\nsteps = 3\n")
    with pytest.raises(config.ConfigError, match="unknown table"):
        config.load("train", bad_table)
    with pytest.raises(config.ConfigError, match="not found"):
        config.load("train", tmp_path / "missing.toml")
    broken = tmp_path / "c.toml"
    broken.write_text("[train\n")
    with pytest.raises(config.ConfigError, match="invalid TOML"):
        config.load("train", broken)


def test_dump_json_round_trips():
    cfg = config.load("transform", sets=["sample_rate=8000"])
    data = json.loads(config.dump_json(cfg, "transform"))
    assert data["stage"] == "transform" and data["config"]["sample_rate"] == 8000


def test_cli_rejects_unknown_key_with_exit_2(capsys):
    assert main(["generate", "--set", "colour=red"]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err


def test_shipped_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "local").glob("*.toml"))
    assert files
    for f in files:
        for stage in config.STAGES:
            config.load(stage, f)


def test_module_and_entry_scripts_show_help():
    for argv in (["-m", "waveforms", "--help"], ["run_model_predictions.py", "--help"]):
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=str(
            __import__("pathlib").Path(__file__).resolve().parents[1]), timeout=120)
        assert out.returncode == 0, out.stderr
        assert "--config" in out.stdout or "generate" in out.stdout
