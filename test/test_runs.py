"""Run ids and the clean-up after a commit (waveforms.storage.runs)."""
import re
import time

from waveforms.storage import runs


def test_run_ids_are_utc_time_then_random_hex_and_distinct():
    before = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    ids = [runs.run_id() for _ in range(50)]
    after = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", i) for i in ids)
    assert all(before <= i[:15] <= after for i in ids)
    assert len(set(ids)) == 50


def test_delete_unreferenced_removes_only_what_the_predicate_rejects(tmp_path):
    keep = {"part-a.u8", "sub/part-b.u8"}
    for rel in ("part-a.u8", "part-old.u8", "sub/part-b.u8", "sub/part-c.u8"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    deleted = runs.delete_unreferenced(str(tmp_path), lambda rel: rel in keep)
    assert sorted(deleted) == ["part-old.u8", "sub/part-c.u8"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(keep)
    assert runs.delete_unreferenced(str(tmp_path / "absent"), lambda rel: False) == []
