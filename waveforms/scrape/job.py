"""State shared by every scrape source: output, manifest, errors, counts, progress, summary."""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from typing import Any

from tqdm import tqdm

from waveforms import storage
from waveforms.config import ScrapeConfig, to_json
from waveforms.scrape.manifest import ERRORS, JsonLines, Manifest
from waveforms.scrape.output import Output

log = logging.getLogger(__name__)


class Job:
    """One scrape run: where things go and what happened to each track."""

    def __init__(self, cfg: ScrapeConfig, source: str):
        self.cfg = cfg
        self.source = source
        self.out = Output(cfg.out)
        storage.write_text(self.out.uri("config.json"), to_json(cfg, "scrape"))
        self.manifest = Manifest(self.out.root)
        self.manifest.load()
        self.errors = JsonLines(self.out.uri(ERRORS))
        if self.errors.s3:
            self.errors.load()
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.bytes = 0
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.bar = tqdm(total=None, unit="track", desc=f"scrape {source}", disable=None, file=sys.stderr)

    # -- per-track outcomes ------------------------------------------------
    def complete(self, track_id: Any, rel: str) -> bool:
        """True (and counted as skipped) if the manifest already holds this file intact."""
        row = self.manifest.get(track_id)
        if not row or row.get("path") != rel or not row.get("size") or not row.get("sha256"):
            return False
        if self.out.problem(rel, {"size": row["size"], "sha256": row["sha256"]}):
            return False
        self._count("skipped")
        return True

    def adopt(self, track_id: Any, rel: str) -> dict[str, Any] | None:
        """``{"size", "sha256"}`` of a file already under its final name but missing from the manifest.

        Files only take a final name once complete, so such a file (left by a run
        killed between the rename and the manifest line) is kept, not fetched again.
        A file the manifest knows but that no longer matches it is not adopted.
        """
        if self.manifest.get(track_id) is not None:
            return None
        return self.out.record(rel)

    def downloaded(self, row: dict[str, Any], reused: bool = False) -> None:
        self.manifest.append(row)
        with self._lock:
            if not reused:
                self.bytes += int(row["size"])
        self._count("reused" if reused else "downloaded")

    def filtered(self, track_id: Any, why: str) -> None:
        log.debug("track %s filtered out: %s", track_id, why)
        self._count("filtered")

    def duplicate(self) -> None:
        self._count("duplicate", advance=False)

    def note(self, reason: str, detail: str, *, track_id: Any = None, url: str = "") -> None:
        """Record a problem in errors.jsonl without counting the track as failed."""
        self.errors.append(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "source": self.source,
                "id": None if track_id is None else str(track_id),
                "url": url,
                "reason": reason,
                "detail": detail[:500],
            }
        )

    def fail(self, reason: str, detail: str, *, track_id: Any = None, url: str = "", advance: bool = True) -> None:
        self.note(reason, detail, track_id=track_id, url=url)
        with self._lock:
            self.failures[reason] += 1
        log.info("failed %s %s: %s %s", track_id if track_id is not None else "", url, reason, detail[:200])
        self._count("failed", advance=advance)

    def _count(self, what: str, advance: bool = True) -> None:
        with self._lock:
            self.counts[what] += 1
            if advance:
                self.bar.update(1)
                self.bar.set_postfix(MB=f"{self.bytes / 1e6:.1f}", failed=self.counts["failed"], refresh=False)

    @property
    def kept(self) -> int:
        return self.counts["downloaded"] + self.counts["skipped"] + self.counts["reused"]

    # -- end of run ---------------------------------------------------------
    def summary(self) -> str:
        secs = time.monotonic() - self.started
        lines = [
            f"scrape ({self.source}) -> {self.out.root} in {secs:.1f} s",
            f"  downloaded {self.counts['downloaded']} ({self.bytes / 1e6:.1f} MB), "
            f"already had {self.counts['skipped'] + self.counts['reused']}, "
            f"filtered {self.counts['filtered']}, duplicates {self.counts['duplicate']}, "
            f"failed {self.counts['failed']}",
        ]
        for reason, n in sorted(self.failures.items()):
            lines.append(f"    {reason}: {n}")
        if self.failures:
            lines.append(f"  details: {self.errors.uri}")
        return "\n".join(lines)

    def finish(self) -> int:
        """Flush, print the summary; exit code 1 only if nothing could be fetched."""
        self.bar.close()
        self.manifest.flush()
        self.manifest.compact()
        self.errors.flush()
        self.out.close()
        print(self.summary(), file=sys.stderr)
        if self.kept == 0:
            print("scrape: nothing could be fetched", file=sys.stderr)
            return 1
        return 0
