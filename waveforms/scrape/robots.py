"""robots.txt per origin (urllib.robotparser) plus the ``Content-Signal`` extension.

Following RFC 9309: a 4xx robots.txt allows everything; a 5xx or an unreachable one
means the site is unavailable to crawlers. A ``Content-Signal: ai-train=no`` line in
a group that applies to us (or outside any group) is reported by :meth:`Robots.signals`.
"""
from __future__ import annotations

import threading
from typing import Callable
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

Fetch = Callable[[str], tuple[int, str]]


def product_token(user_agent: str) -> str:
    """``waveforms-scraper/0.1 (+url)`` -> ``waveforms-scraper``."""
    return user_agent.split("/")[0].split()[0].strip().lower() if user_agent.strip() else "*"


def parse_content_signals(text: str, user_agent: str) -> dict[str, str]:
    """The ``Content-Signal`` key=value pairs that apply to ``user_agent``.

    Signals in a group naming our product token win over the ``*`` group; lines
    before any ``User-agent`` apply to everyone.
    """
    token = product_token(user_agent)
    global_sig: dict[str, str] = {}
    star: dict[str, str] = {}
    ours: dict[str, str] = {}
    agents: list[str] = []
    in_rules = False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "user-agent":
            if in_rules:
                agents, in_rules = [], False
            agents.append(value.lower())
            continue
        in_rules = True
        if key != "content-signal":
            continue
        pairs = {}
        for item in value.split(","):
            k, sep, v = item.partition("=")
            if sep:
                pairs[k.strip().lower()] = v.strip().lower()
        if not agents:
            global_sig.update(pairs)
        elif any(a != "*" and a in token for a in agents):
            ours.update(pairs)
        elif "*" in agents:
            star.update(pairs)
    return {**global_sig, **(ours or star)}


class _Entry:
    def __init__(self, parser: RobotFileParser | None, signals: dict[str, str], unavailable: bool):
        self.parser = parser
        self.signals = signals
        self.unavailable = unavailable


class Robots:
    """Fetch and cache robots.txt per origin; answer allow/deny for our User-Agent."""

    def __init__(self, fetch: Fetch, user_agent: str):
        self._fetch = fetch
        self.user_agent = user_agent
        self._cache: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def _entry(self, url: str) -> _Entry:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            if origin in self._cache:
                return self._cache[origin]
            try:
                status, text = self._fetch(origin + "/robots.txt")
            except Exception:  # unreachable: RFC 9309 says assume disallowed
                status, text = 599, ""
            parser = RobotFileParser(origin + "/robots.txt")
            if status == 200:
                parser.parse(text.splitlines())
                entry = _Entry(parser, parse_content_signals(text, self.user_agent), False)
            elif 400 <= status < 500:
                parser.allow_all = True
                entry = _Entry(parser, {}, False)
            else:
                entry = _Entry(None, {}, True)
            self._cache[origin] = entry
            return entry

    def unavailable(self, url: str) -> bool:
        return self._entry(url).unavailable

    def allowed(self, url: str) -> bool:
        entry = self._entry(url)
        return entry.parser is not None and entry.parser.can_fetch(self.user_agent, url)

    def signals(self, url: str) -> dict[str, str]:
        return dict(self._entry(url).signals)

    def ai_train_refused(self, url: str) -> bool:
        return self._entry(url).signals.get("ai-train") == "no"
