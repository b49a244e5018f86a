"""A polite HTTP client: User-Agent, per-host rate limit, urllib3 retries, robots.txt.

Retries (429/5xx, connection and read errors) come from urllib3's ``Retry``:
exponential backoff with jitter, ``Retry-After`` honoured on 429 and 503 (capped),
a bounded number of attempts. Every request first waits for its host's rate
limiter and is checked against that host's robots.txt.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from waveforms.scrape.robots import Robots

RETRY_STATUSES = (429, 500, 502, 503, 504)


class FetchError(Exception):
    """A request that failed for good; ``reason`` is a short stable code for summaries."""

    def __init__(self, reason: str, detail: str = "", url: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.url = url


class CappedRetry(Retry):
    """urllib3 ``Retry`` whose ``Retry-After`` waits are capped (a hostile header cannot stall a run)."""

    MAX_RETRY_AFTER_S = 300.0

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.MAX_RETRY_AFTER_S)


def retry_policy(max_retries: int, backoff_factor: float) -> Retry:
    """The one retry policy used for every request (and for body-level retries)."""
    return CappedRetry(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        other=max_retries,
        redirect=5,
        backoff_factor=backoff_factor,
        backoff_jitter=backoff_factor,
        backoff_max=60.0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )


class RateLimiter:
    """At most ``rate`` requests a second (thread-safe); records the time spent waiting."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def wait(self) -> float:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
            delay = slot - now
            self.waited_s += delay
        if delay > 0:
            time.sleep(delay)
        return delay


def check_url(url: str) -> str:
    """Only absolute http(s) URLs with a host are fetched."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FetchError("bad-url", f"not an http(s) URL: {url!r}", url)
    return url


@dataclass
class HttpSettings:
    user_agent: str
    requests_per_second: float = 1.0
    max_retries: int = 5
    backoff_factor: float = 0.5
    timeout_s: float = 30.0
    pool_size: int = 4


class Http:
    """One session for a run: rate limit per host, robots.txt per origin, retries."""

    def __init__(self, settings: HttpSettings):
        self.settings = settings
        self.session = requests.Session()
        self.session.headers["User-Agent"] = settings.user_agent
        adapter = HTTPAdapter(
            max_retries=retry_policy(settings.max_retries, settings.backoff_factor),
            pool_connections=4,
            pool_maxsize=max(4, settings.pool_size),
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._limiters: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()
        self.robots = Robots(self._fetch_robots, settings.user_agent)
        self.requests = 0

    def limiter(self, url: str) -> RateLimiter:
        host = urlsplit(url).netloc
        with self._lock:
            if host not in self._limiters:
                self._limiters[host] = RateLimiter(self.settings.requests_per_second)
            return self._limiters[host]

    @property
    def waited_s(self) -> float:
        return sum(lim.waited_s for lim in self._limiters.values())

    def new_retry(self) -> Retry:
        return retry_policy(self.settings.max_retries, self.settings.backoff_factor)

    def _request(self, url: str, stream: bool, headers: dict[str, str] | None) -> requests.Response:
        check_url(url)
        self.limiter(url).wait()
        with self._lock:
            self.requests += 1
        try:
            resp = self.session.get(url, stream=stream, headers=headers, timeout=self.settings.timeout_s)
        except requests.exceptions.InvalidSchema as exc:
            raise FetchError("bad-redirect", str(exc), url) from exc
        except requests.exceptions.Timeout as exc:
            raise FetchError("timeout", str(exc), url) from exc
        except requests.exceptions.RetryError as exc:
            raise FetchError("retries-exhausted", str(exc), url) from exc
        except requests.exceptions.TooManyRedirects as exc:
            raise FetchError("redirects", str(exc), url) from exc
        except requests.exceptions.RequestException as exc:
            raise FetchError("connection", str(exc), url) from exc
        for hop in [*resp.history, resp]:
            if urlsplit(hop.url).scheme not in ("http", "https"):
                resp.close()
                raise FetchError("bad-redirect", f"redirected to {hop.url!r}", url)
        return resp

    def _fetch_robots(self, url: str) -> tuple[int, str]:
        resp = self._request(url, stream=False, headers=None)
        return resp.status_code, resp.text if resp.status_code == 200 else ""

    def get(
        self,
        url: str,
        *,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> requests.Response:
        """GET ``url`` if robots.txt allows it; raise ``FetchError`` unless the status is in ``ok``."""
        check_url(url)
        if self.robots.unavailable(url):
            raise FetchError("robots-unavailable", f"robots.txt could not be read for {url}", url)
        if not self.robots.allowed(url):
            raise FetchError("robots-disallowed", f"robots.txt disallows {url}", url)
        resp = self._request(url, stream, headers)
        if resp.status_code not in ok:
            resp.close()
            raise FetchError(f"http-{resp.status_code}", f"HTTP {resp.status_code} for {url}", url)
        return resp

    def get_text(self, url: str) -> str:
        resp = self.get(url)
        resp.encoding = resp.encoding or "utf-8"
        return resp.text

    def close(self) -> None:
        self.session.close()
