"""Config files, flags and --set overrides; metadata-driven validation, CLI help and README tables."""
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from waveforms import cli, config
from waveforms.cli import main
from waveforms.config.reference import OFTEN, TUNING
from waveforms.train import rank

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_defaults_file_flags_sets(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nsteps = 50\nbatch_size = 3\npreset = "tiny"\n[generate]\nseconds = 9.0\n')
    cfg = config.load("train", f, ["batch_size=5", "clip_norm=0.5"], {"steps": 70, "preset": None})
    assert (cfg.steps, cfg.batch_size, cfg.preset, cfg.clip_norm) == (70, 5, "tiny", 0.5)
    assert cfg.learning_rate == config.TrainConfig().learning_rate  # neither the file nor a flag sets it
    assert config.load("generate", f).seconds == 9.0


def test_types_are_coerced():
    cfg = config.load("scrape", sets=["genres=Rock, Jazz", "fetch_licence=no", "requests_per_second=2"])
    assert cfg.genres == ["Rock", "Jazz"] and cfg.fetch_licence is False and cfg.requests_per_second == 2.0
    cfg = config.load("transform", sets=['spark_conf={"spark.executor.memory": "2g"}'])
    assert cfg.spark_conf == {"spark.executor.memory": "2g"}


@pytest.mark.parametrize(
    "stage, sets, message",
    [
        ("train", ["stpes=3"], "unknown key 'stpes' in --set; known keys: allreduce, batch_per_worker, batch_size, "),
        ("train", ["steps=many"], "steps: cannot read 'many' as int"),
        ("train", ["steps"], "--set expects key=value, got 'steps'"),
        ("train", ["fresh=maybe"], "fresh: cannot read 'maybe' as bool"),
        ("transform", ["mu=1023"], "mu = 1023 is not allowed; allowed: 1..255"),
        ("transform", ["mu=0"], "mu = 0 is not allowed; allowed: 1..255"),
        ("transform", ["resampler=sinc"], "resampler = 'sinc' is not allowed; one of soxr, swr"),
        ("transform", ["normalise=loud"], "normalise = 'loud' is not allowed; one of peak, rms, none"),
        ("transform", ["val_fraction=1"], "val_fraction = 1.0 is not allowed; allowed: >= 0 and < 1"),
        ("transform", ["sample_rate=0"], "sample_rate = 0 is not allowed; allowed: 1000..192000"),
        ("train", ["engine=gpu"], "engine = 'gpu' is not allowed; one of local, allreduce, elephas"),
        ("train", ["preset=huge"], "preset = 'huge' is not allowed; one of tiny, small, default, large"),
        ("train", ["lr_schedule=linear"], "lr_schedule = 'linear' is not allowed; one of constant, cosine"),
        ("train", ["batch_size=0"], "batch_size = 0 is not allowed; allowed: >= 1"),
        ("train", ["learning_rate=0"], "learning_rate = 0.0 is not allowed; allowed: > 0"),
        ("train", ["elephas.mode=fast"], "elephas.mode = 'fast' is not allowed; one of synchronous, asynchronous, "
                                         "hogwild"),
        ("train", ["elephas.frequency=step"], "elephas.frequency = 'step' is not allowed; one of epoch, batch"),
        ("train", ["elephas.parameter_server=grpc"], "elephas.parameter_server = 'grpc' is not allowed; "
                                                     "one of http, socket"),
        ("train", ["elephas.port=70000"], "elephas.port = 70000 is not allowed; allowed: 0..65535"),
        ("train", ["workers=0"], "workers = 0 is not allowed; allowed: >= 1"),
        ("train", ["elephas.workers=3"], "elephas.workers in --set: elephas.workers moved to [train] workers"),
        ("train", ["elephas.colour=red"], "unknown key 'elephas.colour' in --set; known keys: elephas.epochs, "),
        ("train", ["mode=hogwild"], "mode in --set: mode is an elephas key: put it in [train.elephas] or use "
                                    "--set elephas.mode=..."),
        ("train", ["steps.x=1"], "unknown key 'steps.x' in --set: steps has no sub-keys"),
        ("scrape", ["source=youtube"], "source = 'youtube' is not allowed; one of fma-site, fma-dataset, dir"),
        ("scrape", ["archive=fma_huge"], "archive = 'fma_huge' is not allowed; one of fma_small, fma_medium, "
                                         "fma_large, fma_full"),
        ("scrape", ["limit=-1"], "limit = -1 is not allowed; allowed: >= 0"),
        ("scrape", ["total_limit=4"], "total_limit in --set: total_limit is gone: limit now counts tracks in total"),
        ("generate", ["streams=0"], "streams = 0 is not allowed; allowed: >= 1"),
        ("generate", ["temperature=-1"], "temperature = -1.0 is not allowed; allowed: >= 0"),
        ("aws", ["stages=transform,paint"], "stages = ['transform', 'paint'] is not allowed; one of scrape, "
                                            "transform, train, generate"),
    ],
)
def test_bad_values_are_config_errors_naming_key_value_and_allowed(stage, sets, message):
    with pytest.raises(config.ConfigError) as info:
        config.load(stage, sets=sets)
    assert str(info.value).startswith(message)


def test_an_archive_named_in_archive_sha1_is_allowed():
    cfg = config.load("scrape", sets=["archive=fma_test", 'archive_sha1={"fma_test": "ab"}'])
    assert cfg.archive == "fma_test"


def test_elephas_table_sets_and_flags(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nengine = "elephas"\nworkers = 3\n[train.elephas]\nmode = "asynchronous"\n'
                 'windows_per_worker = 100\n')
    cfg = config.load("train", f, ["workers=4"], {"elephas.epochs": 5})
    assert (cfg.engine, cfg.workers) == ("elephas", 4)
    assert cfg.elephas == config.ElephasConfig(mode="asynchronous", epochs=5, windows_per_worker=100)
    args = cli.build_parser().parse_args(["train", "--config", str(f), "--mode", "hogwild", "--frequency", "batch",
                                          "--master", "local[3]", "--parameter-server", "socket", "--port", "4100",
                                          "--epochs", "7", "--workers", "2"])
    cfg = cli.stage_config("train", args)
    assert cfg.elephas == config.ElephasConfig(mode="hogwild", frequency="batch", parameter_server="socket",
                                               port=4100, epochs=7, windows_per_worker=100)
    assert (cfg.master, cfg.workers) == ("local[3]", 2)
    old = tmp_path / "old.toml"
    old.write_text('[train]\nepochs = 2\n')
    with pytest.raises(config.ConfigError, match=r"epochs is an elephas key: put it in \[train.elephas\]"):
        config.load("train", old)
    old.write_text('[train.elephas]\nmaster = "local[2]"\n')  # where master and workers were before
    with pytest.raises(config.ConfigError, match=r"elephas.master moved to \[train\] master"):
        config.load("train", old)


def test_flags_keep_their_names_and_keys():
    expected = {
        "scrape": {"--source": "source", "--base-url": "base_url", "--genre": "genres", "--limit": "limit",
                   "--per-genre-limit": "per_genre_limit", "--out": "out", "--licence": "licences",
                   "--rate": "requests_per_second", "--user-agent": "user_agent", "--archive": "archive",
                   "--mirror": "mirror", "--input": "input"},
        "transform": {"--input": "input", "--output": "output", "--master": "master", "--sample-rate": "sample_rate",
                      "--normalise": "normalise", "--silence-threshold-db": "silence_threshold_db",
                      "--val-fraction": "val_fraction"},
        "train": {"--data": "data", "--model-dir": "model_dir", "--preset": "preset", "--steps": "steps",
                  "--batch-size": "batch_size", "--window": "window", "--engine": "engine", "--seed": "seed",
                  "--fresh": "fresh", "--init-from": "init_from", "--mode": "elephas.mode", "--frequency": "elephas.frequency",
                  "--master": "master", "--workers": "workers", "--epochs": "elephas.epochs",
                  "--parameter-server": "elephas.parameter_server", "--port": "elephas.port",
                  "--max-minutes": "max_minutes"},
        "generate": {"--model": "model", "--seconds": "seconds", "--output": "output", "--temperature": "temperature",
                     "--top-p": "top_p", "--prime": "prime", "--seed": "seed", "--streams": "streams", "--genre": "genre",
                     "--save-every": "save_every", "--evaluate": "evaluate"},
        "index": {"--data": "data", "--output": "output", "--master": "master"},
        "evaluate": {"--model": "model", "--data": "data", "--audio": "audio", "--clips": "clips",
                     "--seconds": "seconds", "--output": "output", "--index": "index"},
    }
    for stage, flags in expected.items():
        assert {flag: key for flag, key, _, _ in config.cli_options(stage)} == flags


def test_flags_parse_to_typed_config():
    args = cli.build_parser().parse_args(["scrape", "--genre", "Rock", "--genre", "Jazz", "--limit", "7",
                                          "--per-genre-limit", "3", "--rate", "2.5", "--licence", "CC-BY"])
    cfg = cli.stage_config("scrape", args)
    assert (cfg.genres, cfg.limit, cfg.per_genre_limit, cfg.requests_per_second, cfg.licences) == (
        ["Rock", "Jazz"], 7, 3, 2.5, ["CC-BY"])
    cfg = cli.stage_config("train", cli.build_parser().parse_args(["train", "--fresh", "--steps", "9"]))
    assert cfg.fresh is True and cfg.steps == 9


@pytest.mark.parametrize("argv, message", [
    (["transform", "--set", "mu=1023"], "waveforms transform: config error: mu = 1023 is not allowed; allowed: 1..255\n"),
    (["transform", "--set", "resampler=sinc"],
     "waveforms transform: config error: resampler = 'sinc' is not allowed; one of soxr, swr\n"),
    (["train", "--mode", "fast"],
     "waveforms train: config error: elephas.mode = 'fast' is not allowed; one of synchronous, asynchronous, "
     "hogwild\n"),
    (["scrape", "--total-limit", "3"],
     "waveforms scrape: config error: total_limit in flags: total_limit is gone: limit now counts tracks in total "
     "for every source (per_genre_limit caps each genre on fma-site); use limit\n"),
])
def test_cli_bad_values_exit_2_with_the_message(capsys, argv, message):
    assert main(argv) == 2
    assert capsys.readouterr().err == message


def test_cli_rejects_unknown_key_with_exit_2(capsys):
    assert main(["generate", "--set", "colour=red"]) == 2
    assert "unknown key 'colour' in --set; known keys: evaluate, genre, model, output, prime, s3_outage_s, save_every, seconds, " \
           "seed, streams, temperature" in capsys.readouterr().err


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
    bad_value = tmp_path / "d.toml"
    bad_value.write_text("[transform]\nmu = 1023\n")
    with pytest.raises(config.ConfigError, match=r"mu = 1023 is not allowed; allowed: 1\.\.255"):
        config.load("transform", bad_value)


def test_json_round_trip_gives_an_equal_config(tmp_path):
    cfg = config.load("train", sets=["elephas.mode=hogwild", "steps=3", "stacks=3", "allreduce.timeout_s=30",
                                     "clip_norm=0", "engine=allreduce"])
    text = config.to_json(cfg, "train")
    data = json.loads(text)
    assert data["stage"] == "train" and data["config"]["steps"] == 3
    assert data["config"]["elephas"]["mode"] == "hogwild" and "mode" not in data["config"]
    assert config.from_json(text) == cfg
    assert config.from_dict(config.TrainConfig, config.to_dict(cfg)) == cfg
    (tmp_path / "config.json").write_text(text)
    assert rank.read_config(str(tmp_path / "config.json")) == cfg  # how the allreduce rank process gets it
    for stage, cls in config.STAGE_CONFIGS.items():
        assert config.from_json(config.to_json(cls(), stage)) == cls(), stage
    with pytest.raises(config.ConfigError, match=r"unknown key\(s\) \['colour'\]"):
        config.from_dict(config.TrainConfig, {"allreduce": {"colour": 1}})


def test_an_invalid_value_is_refused_where_the_config_is_loaded(capsys):
    assert main(["train", "--engine", "allreduce", "--set", "allreduce.timeout_s=0"]) == 2
    assert capsys.readouterr().err == (
        "waveforms train: config error: allreduce.timeout_s = 0.0 is not allowed; allowed: > 0\n")


def test_defaults_are_valid_and_every_field_has_help():
    for stage, cls in config.STAGE_CONFIGS.items():
        config.validate(cls())
        for key, f, _ in config.fields(cls):
            assert f.metadata["help"], f"{stage}.{key} has no help"
    assert config.AwsConfig().release_label == "emr-spark-8.1.0"


def test_shipped_configs_are_valid():
    files = sorted((ROOT / "local").glob("*.toml")) + [ROOT / "aws" / "emr.toml"]
    assert len(files) == 4
    for f in files:
        for stage in config.STAGES:
            config.load(stage, f)
    standalone = config.load("train", ROOT / "local" / "standalone.toml")
    assert (standalone.engine, standalone.workers, standalone.master) == (
        "allreduce", 2, "spark://127.0.0.1:7077")
    demo = config.load("scrape", ROOT / "local" / "demo.toml")
    assert (demo.limit, demo.per_genre_limit) == (20, 10)


def test_docs_key_tables_match_the_metadata():
    page = (ROOT / "docs" / "config.md").read_text()
    assert config.generated_section(page) == config.markdown_table()
    table = config.markdown_table()
    assert "| `mu` | int | `255` | 1..255 |  | mu-law parameter; codes are 0..mu, one byte per sample |" in table
    assert "## [train.elephas]" in table
    n_rows = sum(1 for line in table.splitlines() if line.startswith("| `"))
    assert n_rows == sum(len(list(config.fields(cls))) for cls in config.STAGE_CONFIGS.values())



def test_each_key_table_lists_the_keys_with_a_flag_first_then_the_tuning_keys():
    table = config.markdown_table()
    train = table.split("## [train]\n", 1)[1].split("\n## ", 1)[0]
    often, tuning = train.split(TUNING)
    assert OFTEN in often
    for key in ("data", "preset", "max_minutes", "engine", "workers", "steps"):
        assert f"| `{key}` |" in often and f"| `{key}` |" not in tuning, key
    for key in ("stacks", "learning_rate", "warmup_steps", "ema_decay", "clip_norm"):
        assert f"| `{key}` |" in tuning, key
    top_level_flags = [f.name for f in dataclasses.fields(config.TrainConfig) if f.metadata.get("flag")]
    assert [line.split("`")[1] for line in often.splitlines() if line.startswith("| `")] == top_level_flags


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("stage", cli.CLI_STAGES)
def test_stage_help_lists_every_flag_with_its_help(stage, capsys):
    with pytest.raises(SystemExit) as info:
        main([stage, "--help"])
    assert info.value.code == 0
    out = _words(capsys.readouterr().out)
    for flag, key, f, _ in config.cli_options(stage):
        assert f" {flag} " in out
        assert _words(cli.flag_help(key, f)) in out, (flag, cli.flag_help(key, f))
    assert "--total-limit" not in out


def test_module_and_entry_scripts_show_help():
    out = subprocess.run([sys.executable, "-m", "waveforms", "--help"], capture_output=True, text=True,
                         cwd=str(ROOT), timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(r"\{scrape,transform,train,generate,index,evaluate,serve,verify,aws\}", out.stdout)
    out = subprocess.run([sys.executable, "run_model_predictions.py", "--help"], capture_output=True, text=True,
                         cwd=str(ROOT), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: waveforms generate [-h] [--config CONFIG] [--set KEY=VALUE]")
    help_text = _words(out.stdout)
    for flag, key, f, tp in config.cli_options("generate"):
        metavar = "" if tp is bool else f" {key.upper()}"  # a switch takes no value
        assert f"{flag}{metavar} {_words(cli.flag_help(key, f))}" in help_text


@pytest.mark.parametrize("kw, message", [
    (dict(source="ftp"), "source = 'ftp' is not allowed; one of fma-site, fma-dataset, dir"),
    (dict(source="fma-dataset", archive="fma_huge"), "archive = 'fma_huge' is not allowed"),
    (dict(download_concurrency=0), "download_concurrency = 0 is not allowed"),
])
def test_a_stage_run_from_python_gets_the_clis_checks_before_writing(tmp_path, kw, message):
    from waveforms.config import ScrapeConfig
    from waveforms.scrape import run

    with pytest.raises(config.ConfigError, match=message):
        run(ScrapeConfig(out=str(tmp_path / "raw"), **kw))
    assert not (tmp_path / "raw").exists()
