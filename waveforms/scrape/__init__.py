"""The scrape stage: MP3s and a ``manifest.jsonl`` from the FMA site, the FMA dataset or a folder.

``run(cfg)`` dispatches on ``cfg.source`` (``fma-site``, ``fma-dataset``, ``dir``)
and returns the exit code: 0 if anything was fetched (or already there), else 1.
"""
from __future__ import annotations

from waveforms.config import ScrapeConfig, validate
from waveforms.runtime.errors import UserError
from waveforms.scrape import dir_source, fma_dataset, fma_site
from waveforms.scrape.http import FetchError, Http, HttpSettings, check_url
from waveforms.scrape.job import Job


def make_http(cfg: ScrapeConfig):
    return Http(
        HttpSettings(
            user_agent=cfg.user_agent,
            requests_per_second=cfg.requests_per_second,
            max_retries=cfg.max_retries,
            backoff_factor=cfg.backoff_factor,
            timeout_s=cfg.timeout_s,
            pool_size=cfg.download_concurrency + 2,
        )
    )


def run(cfg: ScrapeConfig) -> int:
    """Run the configured source; see the module docstring for the exit code."""
    validate(cfg)  # the same checks as the CLI's, for configs built in Python
    if cfg.source != "dir":
        flag, url = ("--base-url", cfg.base_url) if cfg.source == "fma-site" else ("--mirror", cfg.mirror)
        try:
            check_url(url)
        except FetchError as exc:
            raise UserError(f"{flag}: {exc.detail}") from exc
    job = Job(cfg, cfg.source)
    try:
        if cfg.source == "dir":
            dir_source.run(cfg, job)
        else:
            http = make_http(cfg)
            try:
                if cfg.source == "fma-site":
                    fma_site.run(cfg, job, http)
                else:
                    fma_dataset.run(cfg, job, http)
            finally:
                http.close()
    except BaseException:
        job.bar.close()
        job.manifest.flush()
        job.errors.flush()
        raise
    return job.finish()
