"""The track contract: one id for a file whichever route it takes, and JSON Lines' torn-line rule."""
import json

import pytest

from waveforms.runtime.errors import UserError
from waveforms.storage import jsonl
from waveforms.storage.tracks import id_from_path, ids_for_paths, track_id


def test_ids_are_strings_whatever_the_source():
    assert track_id(2) == "2" and track_id("140") == "140"
    assert id_from_path("Album/Song 1.mp3") == "Album_Song_1"
    assert id_from_path("000123.mp3") == "000123"
    assert id_from_path("Ünïcode – Track.ogg") == "Ünïcode_Track"


def test_clashing_names_keep_both_tracks_with_stable_ids():
    ids = ids_for_paths(["a_b.mp3", "a b.mp3", "c.mp3"])
    assert ids["a b.mp3"] == "a_b"  # the first in sorted order keeps the plain id
    assert ids["a_b.mp3"].startswith("a_b-") and len(ids["a_b.mp3"]) == len("a_b-") + 8
    assert ids == ids_for_paths(["c.mp3", "a b.mp3", "a_b.mp3"])  # order of listing does not matter
    assert len(set(ids.values())) == 3


def test_a_torn_last_line_is_dropped_and_nothing_else():
    good = json.dumps({"id": "1"}) + "\n"
    assert jsonl.parse(good + '{"id": "2", "pa', "m") == [{"id": "1"}]
    assert jsonl.parse(good + '{"id": "2"}', "m") == [{"id": "1"}, {"id": "2"}]  # complete, only its newline lost
    assert jsonl.split_torn(good + '{"id') == (good, '{"id')
    with pytest.raises(UserError, match=r"m:2: not JSON"):
        jsonl.parse(good + '{"id": "2", "pa\n' + good, "m")
    with pytest.raises(UserError, match=r"m:1: missing \['path'\]"):
        jsonl.parse(good, "m", required=("id", "path"))


def test_append_writes_whole_lines(tmp_path):
    path = tmp_path / "sub" / "x.jsonl"
    jsonl.append(path, {"b": 1, "a": "é"})
    jsonl.append(path, {"c": 2})
    assert path.read_text(encoding="utf-8") == '{"a": "é", "b": 1}\n{"c": 2}\n'
    assert jsonl.parse(path.read_text(encoding="utf-8"), str(path)) == [{"a": "é", "b": 1}, {"c": 2}]
