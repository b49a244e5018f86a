"""`waveforms aws sync` between a local folder and moto S3: only changed files move."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


from helpers.aws import BUCKET, client, keys
from waveforms.aws import cli
from waveforms.aws.sync import PART_SIZE, local_etag, sync


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "manifest.jsonl": b'{"id": "a"}\n{"id": "b"}\n',
        "shards/train-00000.bin": os.urandom(5000),
        "shards/val-00000.bin": os.urandom(300),
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / ".model.keras.part").write_bytes(b"half written")  # an unfinished atomic write
    return files


def test_upload_then_download_copy_only_changes(aws_env, tmp_path, capsys):
    client("s3").create_bucket(Bucket=BUCKET)
    src = tmp_path / "dataset"
    files = make_tree(src)
    remote = f"s3://{BUCKET}/wf/dataset"

    first = sync(str(src), remote, progress=False)
    assert sorted(first.copied) == sorted(files)
    assert first.bytes == sum(len(d) for d in files.values())
    assert keys() == sorted(f"wf/dataset/{rel}" for rel in files)
    s3 = client("s3")
    for rel, data in files.items():
        assert s3.get_object(Bucket=BUCKET, Key=f"wf/dataset/{rel}")["Body"].read() == data

    again = sync(str(src), remote, progress=False)
    assert again.copied == [] and again.unchanged == len(files)

    # Same size, different bytes: still copied (the ETag differs).
    changed = bytearray(files["shards/val-00000.bin"])
    changed[0] ^= 0xFF
    (src / "shards/val-00000.bin").write_bytes(bytes(changed))
    third = sync(str(src), remote, progress=False)
    assert third.copied == ["shards/val-00000.bin"] and third.unchanged == len(files) - 1

    dst = tmp_path / "copy"
    code = cli.main(["sync", remote, str(dst), "--no-progress"])
    assert code == 0
    assert f"copied {len(files)} file(s)" in capsys.readouterr().out
    got = {p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert got == {**files, "shards/val-00000.bin": bytes(changed)}

    (dst / "manifest.jsonl").write_bytes(b"locally edited\n")
    down = sync(remote, str(dst), progress=False)
    assert down.copied == ["manifest.jsonl"]
    assert (dst / "manifest.jsonl").read_bytes() == files["manifest.jsonl"]
    assert sync(remote, str(dst), progress=False).copied == []


def test_multipart_etag_matches_s3(aws_env, tmp_path):
    client("s3").create_bucket(Bucket=BUCKET)
    big = tmp_path / "big" / "model.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(PART_SIZE + 12345))  # boto3 uploads this in 2 parts
    first = sync(str(big.parent), f"s3://{BUCKET}/m", progress=False)
    assert first.copied == ["model.bin"]
    etag = client("s3").head_object(Bucket=BUCKET, Key="m/model.bin")["ETag"].strip('"')
    assert etag.endswith("-2")
    assert local_etag(big) == etag
    assert sync(str(big.parent), f"s3://{BUCKET}/m", progress=False).copied == []


def test_local_etag_of_a_small_file_is_its_md5(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"waveforms")
    assert local_etag(f) == hashlib.md5(b"waveforms").hexdigest()


def test_bad_sync_locations_are_errors(aws_env, tmp_path, capsys):
    client("s3").create_bucket(Bucket=BUCKET)
    assert cli.main(["sync", str(tmp_path), str(tmp_path / "b")]) == 1
    assert "between S3 and a local folder" in capsys.readouterr().err
    assert cli.main(["sync", str(tmp_path / "missing"), f"s3://{BUCKET}/x"]) == 1
    assert "source folder not found" in capsys.readouterr().err
    assert cli.main(["sync", f"s3://{BUCKET}/nothing", str(tmp_path / "c")]) == 1
    assert "no objects under" in capsys.readouterr().err
    assert keys() == [] and not (tmp_path / "c").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x")
    assert cli.main(["sync", str(tmp_path / "d"), "s3://no-such-bucket/x"]) == 1
    assert "NoSuchBucket" in capsys.readouterr().err
