"""The stage registry is the one list of stages: the CLI, the config tables, the EMR step and the docs read it."""
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from waveforms import cli, config, stages
from waveforms.aws import plan

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_config_and_runner_resolves():
    for s in stages.REGISTRY:
        assert config.STAGE_CONFIGS[s.name] is stages.resolve(s.config)
        runner = stages.resolve(s.runner)
        assert callable(runner) and len(inspect.signature(runner).parameters) >= 1, s.runner


def test_cli_config_tables_and_emr_steps_come_from_the_registry():
    assert config.STAGES == tuple(s.name for s in stages.REGISTRY)
    assert cli.CLI_STAGES == tuple(s.name for s in stages.REGISTRY if not s.own_parser)
    sub = next(a for a in cli.build_parser()._actions if a.dest == "stage")
    assert set(sub.choices) == set(config.STAGES)
    assert plan.PIPELINE == config.PIPELINE == ("scrape", "transform", "train", "generate")
    field = next(f for f in config.fields(config.AwsConfig) if f[0] == "stages")[1]
    assert field.metadata["choices"] == ("scrape", "transform", "train", "generate")


def test_an_unknown_stage_is_an_error_naming_the_known_ones():
    with pytest.raises(KeyError, match="unknown stage 'sing'; stages: scrape, transform"):
        stages.stage("sing")
    with pytest.raises(SystemExit):
        cli.main(["sing"])


def test_the_cli_help_imports_no_stage_and_no_heavy_library():
    code = ("import sys\nfrom waveforms import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'pyspark', 'numba', 'faiss') or m.startswith(('waveforms.train', "
            "'waveforms.generate', 'waveforms.evaluate', 'waveforms.transform', 'waveforms.serve', 'waveforms.scrape'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_docs_stage_table_matches_the_registry():
    text = (ROOT / "docs" / "architecture.md").read_text()
    start, end = text.index(stages.DOCS_START) + len(stages.DOCS_START), text.index(stages.DOCS_END)
    assert text[start:end].strip("\n") + "\n" == stages.markdown_table()
    assert all(f"| `{s.name}` |" in stages.markdown_table() for s in stages.REGISTRY)
