"""Whether a dataset's shards are whole: their sizes and SHA-256 against what its manifest records.

The transform writes ``shard_size`` and ``shard_sha256`` into every manifest
row (the same values for every track of a shard), so the record is committed
with the manifest itself. Datasets written before that have neither: their
shards are checked against the bytes their tracks reach (``offset +
num_samples``) and cannot be checked by hash.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

from waveforms import storage
from waveforms.storage import checksums

SIZE_KEY = "shard_size"
HASH_KEY = "shard_sha256"


@dataclass
class Shard:
    """One shard as the manifest describes it."""

    name: str  # path relative to the dataset root
    tracks: list[str] = field(default_factory=list)
    end: int = 0  # bytes the tracks reach
    last: str = ""  # the track that reaches ``end``
    size: int | None = None  # recorded size (None: not recorded)
    sha256: str | None = None  # recorded hash (None: not recorded)

    def record(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}

    def about(self) -> str:
        more = f" and {len(self.tracks) - 1} more" if len(self.tracks) > 1 else ""
        return f"track {self.tracks[0]}{more}"


def shards(tracks: Iterable[dict[str, Any]]) -> tuple[dict[str, Shard], list[str]]:
    """The shards of manifest rows ``tracks``, and the rows' own contradictions (problems in words)."""
    out: dict[str, Shard] = {}
    problems: list[str] = []
    for t in tracks:
        s = out.setdefault(str(t["shard"]), Shard(str(t["shard"])))
        s.tracks.append(str(t["id"]))
        end = int(t["offset"]) + int(t["num_samples"])
        if end > s.end:
            s.end, s.last = end, str(t["id"])
        for key, attr, kind in ((SIZE_KEY, "size", int), (HASH_KEY, "sha256", str)):
            if t.get(key) is None:
                continue
            value, held = kind(t[key]), getattr(s, attr)
            if held is not None and held != value:
                problems.append(f"{s.name}: the manifest gives it two different {key} values "
                                f"(track {t['id']}: {value}, another: {held})")
            setattr(s, attr, value)
    for s in out.values():
        if s.size is not None and s.end > s.size:
            problems.append(f"{s.name}: track {s.last} reaches byte {s.end}, past the recorded size {s.size}")
    return out, problems


def listing(root: str, table: dict[str, Shard], client=None) -> dict[str, int | None]:
    """Each shard's size on disk or S3 (None: absent), from one listing of the folder that holds them."""
    folders = {name.rpartition("/")[0] for name in table}
    base = storage.join(root, folders.pop()) if len(folders) == 1 and "" not in folders else root
    found = storage.list_sizes(base, client)
    return {name: found.get(storage.join(root, name)) for name in table}


def size_problems(table: dict[str, Shard], sizes: dict[str, int | None]) -> dict[str, str]:
    """Shard name -> what is wrong, for shards missing, cut short or of another size than recorded."""
    problems = {}
    for name, s in table.items():
        size = sizes.get(name)
        if size is None:
            problems[name] = f"{name} is missing ({s.about()})"
        elif s.size is not None and size != s.size:
            cut = f"; track {s.last} ends at byte {s.end}" if size < s.end else ""
            problems[name] = f"{name} is {size} bytes, the manifest records {s.size} ({s.about()}{cut})"
        elif s.size is None and size < s.end:
            problems[name] = f"{name} is {size} bytes, too short for track {s.last}, which ends at byte {s.end}"
    return problems


def hash_problems(root: str, table: dict[str, Shard], workers: int = 4, client=None) -> list[str]:
    """Shards whose SHA-256 differs from the recorded one (every shard with a record is read once)."""
    hashed = [s for s in table.values() if s.sha256]
    client = client or (storage.s3_client() if storage.is_s3(root) else None)

    def check(s: Shard) -> str | None:
        got = checksums.sha256(storage.join(root, s.name), client)
        return None if got == s.sha256 else f"{s.name} is corrupt: its SHA-256 is not the manifest's ({s.about()})"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return [p for p in pool.map(check, hashed) if p]


def unhashed(table: dict[str, Shard]) -> list[str]:
    """Shards with no recorded SHA-256 (written before the transform recorded them)."""
    return [name for name, s in table.items() if not s.sha256]
