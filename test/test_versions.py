"""Every artifact records ``format_version``; one newer than this code knows is refused with a clear error."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.train import tone_dataset
from waveforms.cli import main
from waveforms.dataset import Dataset
from waveforms.dataset import format as dataset_format
from waveforms.evaluate import index_format, report
from waveforms.model import artifact
from waveforms.storage import versions
from waveforms.storage.versions import NewerFormat

# JSON files in the older keys only (model.json, metrics.jsonl, a checkpoint's state.json); no weights
LEGACY = Path(__file__).parent / "data" / "legacy-tiny-model"


def test_the_check_reads_format_version_or_the_older_version_key():
    assert versions.check({"format_version": 2}, "a.json", 2) == 2
    assert versions.check({"version": 1}, "a.json", 2) == 1
    assert versions.check({}, "a.json", 1) == 0
    with pytest.raises(NewerFormat) as caught:
        versions.check({"format_version": 3}, "/data/a.json", 2)
    assert str(caught.value) == ("/data/a.json has format_version 3, newer than this waveforms reads "
                                 "(format_version 2 at most): upgrade waveforms to read it")
    with pytest.raises(NewerFormat, match="has format_version 4"):
        versions.check({"version": 4}, "a.json", 2)  # an index, evaluation or dataset.json of the older key
    assert NewerFormat.exit_code == 2


def test_renamed_keys_are_read_under_their_new_names_in_place():
    assert list(versions.renamed({"a": 1, "old": 2, "z": 3}, {"old": "new"}).items()) == [("a", 1), ("new", 2),
                                                                                       ("z", 3)]
    assert versions.renamed({"old": 1, "new": 2}, {"old": "new"}) == {"old": 1, "new": 2}  # the new one wins


def _newer(path: Path, newest: int) -> None:
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc.pop("version", None)
    path.write_text(json.dumps({**doc, "format_version": newest + 1}))


def test_a_newer_model_json_is_refused(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(LEGACY, model)
    _newer(model / "model.json", artifact.FORMAT_VERSION)
    with pytest.raises(NewerFormat, match=rf"{model}/model.json has format_version {artifact.FORMAT_VERSION + 1}"):
        artifact.load(model)


def test_a_checkpoint_without_a_version_resumes_and_a_newer_one_is_refused(tmp_path):
    from waveforms.model import checkpoint

    model = tmp_path / "model"
    shutil.copytree(LEGACY, model)
    assert checkpoint.load_state(model)["step"] == 5  # written before checkpoints recorded format_version
    state = model / checkpoint.DIR / checkpoint.latest_name(model) / checkpoint.STATE
    _newer(state, checkpoint.FORMAT_VERSION)
    with pytest.raises(NewerFormat, match=rf"{state} has format_version {checkpoint.FORMAT_VERSION + 1}"):
        checkpoint.load_state(model)


def test_a_newer_dataset_json_is_refused(tmp_path):
    data = tone_dataset(tmp_path / "data")
    Dataset.open(str(data))
    (data / "dataset.json").write_text(json.dumps({"format": "waveforms-dataset", "version": 1}))
    Dataset.open(str(data))  # a dataset.json with the older key
    _newer(data / "dataset.json", dataset_format.FORMAT_VERSION)
    with pytest.raises(NewerFormat, match=rf"{data}/dataset.json has format_version 2"):
        Dataset.open(str(data))


def test_a_newer_index_manifest_is_refused(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"format": "waveforms-index", "version": 2, "files": {}}))
    assert index_format.read_manifest(str(tmp_path))["version"] == 2
    _newer(tmp_path / "index.json", index_format.FORMAT_VERSION)
    with pytest.raises(NewerFormat, match=rf"{tmp_path}/index.json has format_version 3"):
        index_format.read_manifest(str(tmp_path))


def test_a_newer_evaluation_is_refused_and_an_older_one_read_under_todays_names():
    old = {"format": "waveforms-evaluation", "version": 1, "val_nats": 2.0, "val_bits_per_sample": 2.9}
    assert report.upgraded(old, "evaluation.json") == {"format": "waveforms-evaluation", "format_version": 1,
                                                       "val_nats": 2.0, "val_split_bits_per_sample": 2.9}
    with pytest.raises(NewerFormat, match="evaluation.json has format_version 3"):
        report.upgraded({"format": "waveforms-evaluation", "format_version": report.FORMAT_VERSION + 1},
                        "evaluation.json")


@pytest.mark.parametrize("command", ["generate", "verify"])
def test_the_cli_refuses_a_newer_model_in_one_line_with_exit_code_2(command, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(LEGACY, model)
    _newer(model / "model.json", artifact.FORMAT_VERSION)
    argv = {"generate": ["generate", "--model", str(model), "--seconds", "0.1", "--output", str(tmp_path / "x.wav")],
            "verify": ["verify", str(model)]}[command]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[-1] == (f"waveforms {command}: error: {model}/model.json has format_version 2, newer "
                                    "than this waveforms reads (format_version 1 at most): upgrade waveforms to "
                                    "read it")
    assert "Traceback" not in err and not (tmp_path / "x.wav").exists()


def test_the_cli_refuses_a_newer_dataset(tmp_path, capsys):
    data = tone_dataset(tmp_path / "data")
    _newer(data / "dataset.json", dataset_format.FORMAT_VERSION)
    assert main(["verify", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"waveforms verify: error: {data}/dataset.json has format_version 2, newer than "
                                "this waveforms reads (format_version 1 at most): upgrade waveforms to read it"]
