"""Local copies through storage: atomic, with the permissions of the umask in force when the file is written."""
import os
import stat

from waveforms import storage


def test_a_local_download_copies_the_bytes_reports_progress_and_leaves_no_partial_file(tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom((1 << 20) + 123)
    src.write_bytes(data)
    seen = []
    storage.download_file(str(src), tmp_path / "out" / "copy.bin", callback=seen.append)
    assert (tmp_path / "out" / "copy.bin").read_bytes() == data
    assert seen == [1 << 20, 123]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["copy.bin"]


def test_written_files_follow_the_umask_at_write_time(tmp_path):
    before = os.umask(0o027)
    try:
        assert storage.umask() == 0o027
        storage.write_text(str(tmp_path / "a.txt"), "a")
        os.umask(0o002)
        assert storage.umask() == 0o002
        storage.write_text(str(tmp_path / "b.txt"), "b")
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o664
