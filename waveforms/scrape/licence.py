"""Creative Commons licences: codes from URLs and names, and the ``--licence`` filter."""
from __future__ import annotations

import fnmatch
import re
from urllib.parse import urlsplit

_PARTS = {"by": "BY", "nc": "NC", "sa": "SA", "nd": "ND"}


def code_from_url(url: str | None) -> str | None:
    """``https://creativecommons.org/licenses/by-nc-sa/3.0/`` -> ``CC-BY-NC-SA-3.0``."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    if not parts.netloc.lower().endswith("creativecommons.org"):
        return None
    segs = [s for s in parts.path.lower().split("/") if s]
    if len(segs) >= 2 and segs[0] == "publicdomain":
        kind = {"zero": "CC0", "mark": "PDM"}.get(segs[1])
        return kind
    if len(segs) >= 2 and segs[0] == "licenses":
        elems = segs[1].split("-")
        if not all(e in _PARTS for e in elems):
            return None
        code = "CC-" + "-".join(_PARTS[e] for e in elems)
        if len(segs) >= 3 and re.fullmatch(r"\d+(\.\d+)?", segs[2]):
            code += "-" + segs[2]
        return code
    return None


def url_from_name(name: str | None) -> str | None:
    """Best-effort URL for a licence title such as ``Attribution-NonCommercial-ShareAlike 3.0``."""
    if not name:
        return None
    text = name.lower().replace(" ", "")
    if "cc0" in text or "zero" in text or "publicdomaindedication" in text:
        return "https://creativecommons.org/publicdomain/zero/1.0/"
    if "attribution" not in text:
        return None
    elems = ["by"]
    if "noncommercial" in text:
        elems.append("nc")
    if "noderiv" in text:
        elems.append("nd")
    elif "sharealike" in text:
        elems.append("sa")
    version = re.search(r"(\d\.\d)", name)
    return f"https://creativecommons.org/licenses/{'-'.join(elems)}/{version.group(1) if version else '4.0'}/"


def matches(url: str | None, patterns: list[str]) -> bool:
    """True if the licence at ``url`` matches any pattern (``CC-BY``, ``CC-BY-NC*``, ``CC0``).

    A pattern matches the code with or without its version (``CC-BY`` and ``CC-BY-4.0``
    both match ``.../by/4.0/``). No patterns: everything matches.
    """
    if not patterns:
        return True
    code = code_from_url(url)
    if code is None:
        return False
    bare = re.sub(r"-\d+(\.\d+)?$", "", code)
    return any(
        fnmatch.fnmatchcase(c, p.strip().upper()) for p in patterns for c in (code, bare)
    )
