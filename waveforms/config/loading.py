"""Reading a stage config: TOML tables and ``--set`` overrides, coerced and checked once; its JSON round trip."""
from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

from waveforms.config.metadata import _hints, _is_section, allowed
from waveforms.config.stages import REMOVED, RENAMED, STAGE_CONFIGS, STAGES
from waveforms.runtime.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file, override or value that cannot be used."""

    kind = "config error"
    exit_code = 2


C = TypeVar("C")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a TOML value or a ``--set`` string to the field's type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, key) for v in value]
    if origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{key}: expected a JSON object, got {value!r}") from exc
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot read {value!r} as {tp.__name__}") from exc
    return value


def _apply(cfg: C, values: dict[str, Any], where: str, prefix: str = "") -> C:
    """Set ``values`` (dotted keys or nested tables for sub-sections) on ``cfg``."""
    hints = _hints(type(cfg))
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        head, dot, rest = key.partition(".")
        renamed = RENAMED.get(type(cfg).__name__, {}).get(head)
        if renamed and not dot:
            new_key, old_type, convert = renamed
            new = convert(_coerce(value, old_type, prefix + key))
            if new is not None:
                setattr(cfg, new_key, _coerce(new, hints[new_key], prefix + new_key))
            continue
        if head not in hints:
            removed = REMOVED.get(type(cfg).__name__, {}).get(head)
            if removed:
                raise ConfigError(f"{prefix}{raw_key} in {where}: {removed}")
            known = ", ".join(sorted(prefix + k for k in hints))
            raise ConfigError(f"unknown key {prefix + raw_key!r} in {where}; known keys: {known}")
        if _is_section(hints[head]):
            sub = {rest: value} if dot else value
            if not isinstance(sub, dict):
                raise ConfigError(f"{prefix}{head}: expected a table, got {value!r}")
            _apply(getattr(cfg, head), sub, where, f"{prefix}{head}.")
        elif dot:
            raise ConfigError(f"unknown key {prefix + raw_key!r} in {where}: {prefix}{head} has no sub-keys")
        else:
            setattr(cfg, key, _coerce(value, hints[key], prefix + key))
    return cfg


def _ok(value: Any, f: dataclasses.Field, cfg: Any) -> bool:
    m = f.metadata
    if m.get("choices"):
        extra = set(getattr(cfg, m["choices_also"])) if m.get("choices_also") else set()
        items = value if isinstance(value, list) else [value]
        return all(v in m["choices"] or v in extra for v in items)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return ((m.get("min") is None or value >= m["min"]) and (m.get("max") is None or value <= m["max"])
            and (m.get("gt") is None or value > m["gt"]) and (m.get("lt") is None or value < m["lt"]))


def validate(cfg: C, prefix: str = "") -> C:
    """Check every field against its declared choices and range; raise :class:`ConfigError`."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, f"{prefix}{f.name}.")
        elif not _ok(value, f, cfg):
            what = "one of" if f.metadata.get("choices") else "allowed:"
            raise ConfigError(f"{prefix}{f.name} = {value!r} is not allowed; {what} {allowed(f)}")
    return cfg


def parse_sets(items: Iterable[str]) -> dict[str, str]:
    """Parse repeated ``key=value`` strings."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value
    return out


def read_file(path: str | Path, stage: str) -> dict[str, Any]:
    """Return the table for ``stage`` from a TOML config file (empty if absent)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    unknown = [k for k in data if k not in STAGES]
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {unknown}; a config file holds tables {list(STAGES)}"
        )
    table = data.get(stage, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{stage}] must be a table")
    return table


def load(
    stage: str,
    config_file: str | Path | None = None,
    sets: Iterable[str] = (),
    flags: dict[str, Any] | None = None,
) -> Any:
    """Build and validate a stage config: defaults < file < explicit flags < ``--set`` overrides.

    ``flags`` and ``sets`` may name sub-section keys with dots (``elephas.mode``).
    """
    cfg = STAGE_CONFIGS[stage]()
    if config_file:
        _apply(cfg, read_file(config_file, stage), f"{config_file} [{stage}]")
    if flags:
        _apply(cfg, {k: v for k, v in flags.items() if v is not None}, "flags")
    _apply(cfg, parse_sets(sets), "--set")
    return validate(cfg)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data: a dict per table, sub-tables nested."""
    return dataclasses.asdict(cfg)


def _renamed(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the renamed keys of ``cls`` (:data:`~waveforms.config.stages.RENAMED`) under their new names."""
    out = dict(data)
    for old, (new_key, _, convert) in RENAMED.get(cls.__name__, {}).items():
        if old in out:
            new = convert(out.pop(old))
            if new is not None and new_key not in data:
                out[new_key] = new
    return out


def from_dict(cls: type[C], data: dict[str, Any], where: str = "a config dict") -> C:
    """Inverse of :func:`to_dict`: the typed config, values as given (checked when first loaded, not again)."""
    hints = _hints(cls)
    data = _renamed(cls, data)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; known keys: {', '.join(hints)}")
    return cls(**{k: from_dict(hints[k], v, where) if _is_section(hints[k]) else v for k, v in data.items()})


def to_json(cfg: Any, stage: str) -> str:
    """The config as JSON: saved beside every output, and how a config reaches another process."""
    return json.dumps({"stage": stage, "config": to_dict(cfg)}, indent=2, sort_keys=True) + "\n"


def from_json(text: str, where: str = "a config JSON") -> Any:
    """Inverse of :func:`to_json`: the stage config it holds, equal to the one written."""
    data = json.loads(text)
    return from_dict(STAGE_CONFIGS[data["stage"]], data["config"], where)
