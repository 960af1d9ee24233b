"""Inference times: ``"1d"`` <-> 86400.0 seconds."""

from __future__ import annotations

from hwsim.errors import ConfigError

_UNITS = {"s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
          "y": 365.0 * 86400.0}


def parse_time(text: str) -> float:
    """``"1d"`` -> 86400.0. Units: s, m/min, h, d, w, y (365 d); a bare number is seconds.

    Raises:
        ConfigError: garbage, zero or negative.
    """
    raw = str(text).strip().lower()
    unit = next((u for u in sorted(_UNITS, key=len, reverse=True) if raw.endswith(u)), None)
    number = raw[: -len(unit)] if unit else raw
    try:
        value = float(number) * (_UNITS[unit] if unit else 1.0)
    except ValueError:
        raise ConfigError(
            f"bad inference time {text!r}; use a positive number of seconds or a number with "
            "a unit s, m, h, d, w, y (e.g. 1s,1h,1d,1y)"
        ) from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"bad inference time {text!r}: it must be positive and finite")
    return value


def parse_times(text: str, option: str = "times") -> list[float]:
    """``"1s,1h,1d"`` -> sorted seconds.

    Raises:
        ConfigError: naming ``option`` and the entry: an empty entry (``1d,,1y``), a bad
            time, or a time given twice (``1d,86400``).
    """
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise ConfigError(f"{option}: no inference time given; e.g. {option} 1s,1h,1d,1y")
    seen: dict[float, str] = {}
    for i, part in enumerate(parts, 1):
        if not part:
            raise ConfigError(f"{option} {text}: entry {i} is empty; separate the times by "
                              "single commas, e.g. 1s,1h,1d,1y")
        try:
            seconds = parse_time(part)
        except ConfigError as e:
            raise ConfigError(f"{option}: {e}") from None
        if seconds in seen:
            same = "" if part == seen[seconds] else f" ({part} = {seen[seconds]})"
            raise ConfigError(f"{option} {text}: {part!r} is given twice{same}")
        seen[seconds] = part
    return sorted(seen)


def format_time(seconds: float | None) -> str:
    """86400 -> ``"1d"``; the largest unit that divides evenly, else seconds."""
    if seconds is None:
        return "-"
    for unit in ("y", "w", "d", "h", "min", "s"):
        n = seconds / _UNITS[unit]
        if n >= 1 and abs(n - round(n)) < 1e-9:
            return f"{int(round(n))}{unit}"
    return f"{seconds:g}s"
