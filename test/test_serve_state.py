"""The studio's readers of optional files say what they skip: absent files quietly, anything else as a warning."""
import logging

import pytest

from waveforms.serve.state import read_json, read_rows


def test_unreadable_files_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    bad_json, bad_rows = tmp_path / "model.json", tmp_path / "metrics.jsonl"
    bad_json.write_text('{"sample_rate": 8000')  # cut short
    bad_rows.write_text('{"step": 1}\nnot json\n{"step": 3}\n')  # a bad line in the middle, not a torn last line
    with caplog.at_level(logging.WARNING, logger="waveforms.serve.state"):
        assert read_json(str(bad_json)) is None
        assert read_rows(str(bad_rows)) == []
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2
    assert str(bad_json) in warned[0] and "JSONDecodeError" in warned[0]
    assert str(bad_rows) in warned[1] and "not JSON" in warned[1]


def test_absent_files_are_skipped_at_debug_level_only(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="waveforms.serve.state"):
        assert read_json(str(tmp_path / "none.json")) is None
        assert read_rows(str(tmp_path / "none.jsonl")) == []
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]
    assert all("absent" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_an_absent_s3_key_is_absent_and_a_missing_bucket_a_warning(aws_env, caplog):
    import boto3

    boto3.client("s3").create_bucket(Bucket="studio")
    with caplog.at_level(logging.DEBUG, logger="waveforms.serve.state"):
        assert read_json("s3://studio/no/model.json") is None
        assert read_json("s3://no-such-bucket/model.json") is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.WARNING]
    assert "no-such-bucket" in caplog.records[1].getMessage()


def test_good_files_are_read(tmp_path):
    (tmp_path / "a.json").write_text('{"x": 1}\n')
    (tmp_path / "r.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"st')  # a torn last line is dropped
    assert read_json(str(tmp_path / "a.json")) == {"x": 1}
    assert read_rows(str(tmp_path / "r.jsonl")) == [{"step": 1}, {"step": 2}]
