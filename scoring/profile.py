"""The ICP profile (docs/architecture.md, "Scoring"): what the club shares, learned from the book, kept in `icp-profile.toml`.

Between the club and the fit: `learn_profile` turns the club's ids into one `ProfileAttribute` per attribute
(a set of values, or a numeric band), `save_profile` writes the reviewable file teams commit, `load_profile`
reads it back (validating every key), and scoring reads only the `Profile`.

Learning, per attribute (documented again at the top of the saved file):
- categorical: candidate values are shared by at least 2 club members (1 when fewer than 5 members have a
  value) and over-represented: their share of the club exceeds their share of the book (both among accounts
  with a value). The profile keeps the fewest of them, most common in the club first, that together cover
  `coverage` (80%) of the club, or all of them if they cannot;
- numeric: the band between the club's `band` quantiles (10%-90%; min-max below 5 members) on a log scale for
  `log_scale` attributes, widened by `widen` of its width on each side and rounded outwards to 2 significant
  figures. Outside the band the match halves every `half_life` (a factor on a log scale, e.g. 2.0);
- weight = club_share - book_share, the share of the club that matches minus the share of the book that does
  (in [0, 1]; 0 means the attribute does not tell the club apart). Attributes below `min_weight` are left out.
The version is a short hash of what determines scores (names, kinds, values, bands, decay, weights), never
of timestamps, club ids or the descriptive shares, so relearning on the same data gives the same version.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomli_w

from scoring.conditions import text_codes
from scoring.errors import ProfileError, check_not_empty, require_columns

__all__ = [
    "DEFAULT_ATTRIBUTES",
    "KINDS",
    "Profile",
    "ProfileAttribute",
    "ProfileError",
    "learn_profile",
    "load_profile",
    "save_profile",
]

DEFAULT_ATTRIBUTES = ("industry", "employees", "annual_revenue", "country")
KINDS = ("categorical", "numeric")
LOG_SCALE = ("employees", "annual_revenue")
_ATTRIBUTE_KEYS = (
    "name",
    "kind",
    "weight",
    "values",
    "low",
    "high",
    "log",
    "half_life",
    "club_share",
    "book_share",
)
_TOP_KEYS = ("version", "learned_at", "as_of", "club", "settings", "attributes")


@dataclass(frozen=True)
class ProfileAttribute:
    """One attribute of the profile.

    Categorical: `values` (the profile's spellings; matching ignores case and surrounding spaces).
    Numeric: the band `low`..`high` (inclusive), `log` scale or not, and `half_life`: outside the band the match
    halves every `half_life` (a factor > 1 on a log scale, e.g. 2.0 = every doubling; in the attribute's units
    otherwise). `club_share`/`book_share` are descriptive: how often the club and the book match.
    """

    name: str
    kind: str
    weight: float
    values: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    half_life: float | None = None
    club_share: float | None = None
    book_share: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(str(v) for v in self.values))
        for key in ("weight", "low", "high", "half_life", "club_share", "book_share"):
            value = getattr(self, key)
            if isinstance(value, int | float | np.number) and not isinstance(value, bool):
                object.__setattr__(self, key, float(value))
        if self.kind == "numeric" and self.half_life is None:
            object.__setattr__(self, "half_life", _default_half_life(self.low, self.high, self.log))
        problems = _attribute_problems(self.to_dict(), "attribute")
        if problems:
            raise ProfileError("\n".join(problems))

    def scoring_content(self) -> dict[str, Any]:
        """What determines scores and reasons; the version hashes exactly this."""
        if self.kind == "categorical":
            return {"name": self.name, "kind": self.kind, "values": list(self.values), "weight": self.weight}
        return {
            "name": self.name,
            "kind": self.kind,
            "low": self.low,
            "high": self.high,
            "log": self.log,
            "half_life": self.half_life,
            "weight": self.weight,
        }

    def to_dict(self) -> dict[str, Any]:
        """The TOML table (descriptive shares included when known)."""
        out = self.scoring_content()
        for key in ("club_share", "book_share"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def describe(self) -> str:
        """One line for humans, used as the comment above the attribute in the TOML file."""
        shares = ""
        if self.club_share is not None and self.book_share is not None:
            shares = f" covers {self.club_share:.0%} of the club and {self.book_share:.0%} of the book"
        if self.kind == "categorical":
            return f"{self.name}: {', '.join(self.values)}{shares}; weight {self.weight:g}"
        scale = "log scale, " if self.log else ""
        decay = (
            f"the match halves for every factor of {self.half_life:g} beyond the band"
            if self.log
            else f"the match halves every {format_number(self.half_life)} beyond the band"
        )
        return (
            f"{self.name}: {format_number(self.low)}-{format_number(self.high)} ({scale}inclusive){shares}; "
            f"{decay}; weight {self.weight:g}"
        )


@dataclass(frozen=True)
class Profile:
    """The learned ICP: its attributes plus where it came from. `version` is derived, never stored state."""

    attributes: tuple[ProfileAttribute, ...]
    club_ids: tuple[str, ...] = ()
    learned_at: pd.Timestamp | None = None
    as_of: pd.Timestamp | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", tuple(self.attributes))
        object.__setattr__(self, "club_ids", tuple(str(i) for i in self.club_ids))
        names = [a.name for a in self.attributes]
        if not names:
            raise ProfileError("a profile needs at least one attribute")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ProfileError(f"attribute(s) listed twice: {', '.join(dupes)}")
        if not any(a.weight > 0 for a in self.attributes):
            raise ProfileError("every attribute has weight 0: at least one needs a positive weight")

    @property
    def version(self) -> str:
        """12 hex digits of SHA-256 over the scoring content (stable across processes and relearning)."""
        content = json.dumps(
            [a.scoring_content() for a in self.attributes], sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(content.encode("utf-8")).hexdigest()[:12]

    def attribute(self, name: str) -> ProfileAttribute:
        for a in self.attributes:
            if a.name == name:
                return a
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------------------
# Learning.


def learn_profile(
    accounts: pd.DataFrame,
    club_ids: Iterable[str],
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    *,
    coverage: float = 0.8,
    band: tuple[float, float] = (0.1, 0.9),
    widen: float = 0.1,
    log_scale: Iterable[str] = LOG_SCALE,
    min_weight: float = 0.05,
    as_of: Any = None,
    learned_at: Any = None,
    settings: Mapping[str, Any] | None = None,
) -> Profile:
    """Learn what the club (`club_ids`, ids in `accounts["id"]`) shares, attribute by attribute.

    A column with a numeric dtype is learned as a numeric band, anything else as categorical. `settings` is
    stored in the profile for the record (the club settings, say); it does not affect the version.
    """
    check_not_empty(accounts)
    require_columns(accounts, ["id", *attributes], "the accounts")
    if not 0 < coverage <= 1:
        raise ProfileError(f"coverage must be in (0, 1], got {coverage}")
    if not 0 <= band[0] < band[1] <= 1:
        raise ProfileError(f"band must be two quantiles 0 <= low < high <= 1, got {band}")
    club_ids = list(dict.fromkeys(str(i) for i in club_ids))
    if not club_ids:
        raise ProfileError("the club is empty: a profile is learned from at least one best customer")
    in_club = accounts["id"].isin(club_ids).to_numpy(dtype=bool)
    found = set(accounts["id"][in_club].astype(str))
    unknown = [i for i in club_ids if i not in found]
    if unknown:
        raise ProfileError(f"club ids not in the accounts: {', '.join(unknown[:20])}")

    log_scale = set(log_scale)
    learned: list[ProfileAttribute] = []
    notes: list[str] = []
    for name in dict.fromkeys(attributes):
        column = accounts[name]
        if _is_numeric(column):
            attr, note = _learn_numeric(name, column, in_club, band, widen, name in log_scale)
        else:
            attr, note = _learn_categorical(name, column, in_club, coverage)
        if note:
            notes.append(note)
        elif attr is not None and attr.weight < min_weight:
            notes.append(
                f"{name}: left out, it barely separates the club from the book "
                f"(weight {attr.weight:g} < min_weight {min_weight:g})"
            )
        elif attr is not None:
            learned.append(attr)
    if not learned:
        raise ProfileError(
            "no attribute separates the club from the book, so there is no profile to score against: "
            + "; ".join(notes)
        )
    record = {
        "attributes": list(attributes),
        "coverage": coverage,
        "band": list(band),
        "widen": widen,
        "log_scale": sorted(log_scale),
        "min_weight": min_weight,
        **(dict(settings) if settings else {}),
    }
    return Profile(
        attributes=tuple(learned),
        club_ids=tuple(sorted(found)),
        learned_at=_utc(learned_at) if learned_at is not None else pd.Timestamp.now(tz="UTC").floor("s"),
        as_of=_utc(as_of) if as_of is not None else None,
        settings=record,
        notes=tuple(notes),
    )


def _is_numeric(column: pd.Series) -> bool:
    dtype = column.dtype
    return (
        pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
        and not isinstance(dtype, pd.CategoricalDtype)
    )


def _learn_categorical(
    name: str, column: pd.Series, in_club: np.ndarray, coverage: float
) -> tuple[ProfileAttribute | None, str | None]:
    codes, uniques, shown = text_codes(column, display=True)
    present = codes >= 0
    k = len(uniques)
    book_counts = np.bincount(codes[present], minlength=k)
    club_codes = codes[in_club & present]
    if club_codes.size == 0:
        return None, f"{name}: left out, no club member has a value"
    club_counts = np.bincount(club_codes, minlength=k)
    book_share = book_counts / max(book_counts.sum(), 1)
    club_share = club_counts / club_codes.size
    # A value only one member has is that member's trait, not the club's (with 10 members, 80% coverage
    # would otherwise drag in a stray value); tiny clubs (< 5 with a value) can't afford the rule.
    min_count = 2 if club_codes.size >= 5 else 1
    candidates = np.flatnonzero((club_counts >= min_count) & (club_share > book_share))
    if candidates.size == 0:
        return None, (
            f"{name}: left out, no value shared by {min_count}+ club members is more common in the club than in "
            "the book"
        )
    lift = club_share[candidates] / np.maximum(book_share[candidates], 1e-12)
    # Most common in the club first; ties to the stronger lift, then the name, so relearning is stable.
    order = sorted(
        range(candidates.size), key=lambda i: (-club_counts[candidates[i]], -lift[i], uniques[candidates[i]])
    )
    chosen: list[int] = []
    covered = 0.0
    for i in order:
        chosen.append(int(candidates[i]))
        covered += club_share[candidates[i]]
        if covered >= coverage - 1e-9:
            break
    c_share = float(club_share[chosen].sum())
    b_share = float(book_share[chosen].sum())
    return (
        ProfileAttribute(
            name=name,
            kind="categorical",
            values=tuple(shown[i] for i in chosen),
            weight=_weight(c_share, b_share),
            club_share=round(c_share, 4),
            book_share=round(b_share, 4),
        ),
        None,
    )


def _learn_numeric(
    name: str, column: pd.Series, in_club: np.ndarray, band: tuple[float, float], widen: float, log: bool
) -> tuple[ProfileAttribute | None, str | None]:
    raw = column.to_numpy(dtype="float64", na_value=np.nan)
    usable = ~np.isnan(raw) & (raw > 0 if log else True)
    x = np.where(usable, np.log10(np.where(usable, raw, 1.0)) if log else raw, np.nan)
    club = x[in_club & usable]
    if club.size == 0:
        return None, f"{name}: left out, no club member has a usable value"
    lo, hi = np.quantile(club, band) if club.size >= 5 else (club.min(), club.max())
    # A floor on the width, so a club that agrees exactly still gets a band it can be near.
    floor = math.log10(2) if log else max(abs(float(np.median(club))) * 0.1, 1e-9)
    pad = widen * max(hi - lo, floor)
    lo, hi = lo - pad, hi + pad
    if log:
        low, high = _round_sig(10**lo, "down"), _round_sig(10**hi, "up")
    else:
        low, high = _round_sig(lo, "down"), _round_sig(hi, "up")
    present = ~np.isnan(raw)
    inside = present & (raw >= low) & (raw <= high)
    c_share = float(inside[in_club & present].mean()) if (in_club & present).any() else 0.0
    b_share = float(inside[present].mean()) if present.any() else 0.0
    return (
        ProfileAttribute(
            name=name,
            kind="numeric",
            low=low,
            high=high,
            log=log,
            half_life=_default_half_life(low, high, log),
            weight=_weight(c_share, b_share),
            club_share=round(c_share, 4),
            book_share=round(b_share, 4),
        ),
        None,
    )


def _weight(club_share: float, book_share: float) -> float:
    return round(max(club_share - book_share, 0.0), 2)


def _default_half_life(low: float | None, high: float | None, log: bool) -> float:
    if log:
        return 2.0
    if low is None or high is None:
        return 1.0
    width = high - low
    return _round_sig(max(width / 2, abs(high) * 0.05, 1e-9), "up")


def _round_sig(value: float, direction: str, digits: int = 2) -> float:
    """Round to `digits` significant figures, outwards: bands read "200-2,500", not "203.7-2,481.2"."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    exponent = math.floor(math.log10(abs(value))) - digits + 1
    mantissa = value / 10**exponent
    # The 1e-9 keeps values already on the grid (2500 -> 2500, not 2600) despite float noise.
    mantissa = math.floor(mantissa + 1e-9) if direction == "down" else math.ceil(mantissa - 1e-9)
    # Formatting strips float noise (1900.0000000002) so the file and the hash stay clean.
    return float(f"{mantissa * 10.0**exponent:.{digits + 2}g}")


def format_number(value: float | None) -> str:
    """Compact, readable numbers for reasons and comments: 2,500 / 12.5M / 1.2B / 0.35."""
    if value is None or not math.isfinite(value):
        return str(value)
    a = abs(value)
    if a >= 1e9:
        return f"{value / 1e9:.3g}B"
    if a >= 1e6:
        return f"{value / 1e6:.3g}M"
    if a >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# ---------------------------------------------------------------------------------------------------------
# The file.

_HEADER = """\
# icp-profile.toml: the Ideal Customer Profile, learned from the club of best customers.
#
# Scoring reads this file: review it, edit it, commit it. After a hand edit the version is recomputed from
# the content (the `version` line is only a record of what it was when written).
#
# fit = sum(weight x match) / sum(weight), shown as 0-100. A missing value does not match.
# - categorical: match = 1 when the account's value is one of `values` (case and spaces ignored), else 0.
# - numeric: match = 1 inside low..high; outside, it halves for every `half_life` beyond the band
#   (with log = true, half_life is a factor: 2.0 = every doubling or halving).
# weight = club_share - book_share: how much more often the club matches than the whole book.
# club_share / book_share are informational; they do not change scores.
"""


def save_profile(profile: Profile, path: str | Path) -> Path:
    """Write `profile` as a reviewable, hand-editable TOML file (data via tomli_w, comments around it)."""
    path = Path(path)
    top: dict[str, Any] = {"version": profile.version}
    if profile.learned_at is not None:
        top["learned_at"] = _utc(profile.learned_at).floor("s").to_pydatetime()
    if profile.as_of is not None:
        top["as_of"] = _utc(profile.as_of).to_pydatetime()
    top["club"] = list(profile.club_ids)
    parts = [_HEADER]
    if profile.notes:
        parts.append("#\n# Notes from learning:\n" + "".join(f"# - {n}\n" for n in profile.notes))
    parts.append("\n" + tomli_w.dumps(top))
    if profile.settings:
        parts.append("\n# How it was learned (for the record; editing these changes nothing).\n")
        parts.append(tomli_w.dumps({"settings": _toml_safe(profile.settings)}))
    for attr in profile.attributes:
        parts.append(f"\n# {attr.describe()}\n")
        parts.append(tomli_w.dumps({"attributes": [attr.to_dict()]}))
    text = "".join(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed over, so a crash never leaves the file scoring reads half-written.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _toml_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [_toml_safe(v) for v in items if v is not None]
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_profile(path: str | Path) -> Profile:
    """Read and validate an `icp-profile.toml`; raise `ProfileError` listing every problem, by key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"no profile file at {path}: run `icp profile learn` to write one") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    return profile_from_dict(data, source=str(path))


def profile_from_dict(data: Mapping[str, Any], source: str = "profile") -> Profile:
    """Build a `Profile` from the file's parsed content, validating every key."""
    problems: list[str] = []
    for key in data:
        if key not in _TOP_KEYS:
            problems.append(f'unknown key "{key}"; allowed: {", ".join(_TOP_KEYS)}')
    attrs = data.get("attributes")
    if not isinstance(attrs, list) or not attrs:
        problems.append("attributes: missing; give at least one [[attributes]] table")
        attrs = []
    names: list[str] = []
    for i, item in enumerate(attrs):
        loc = f"attributes[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{loc}: must be a table")
            continue
        problems += _attribute_problems(item, loc)
        if isinstance(item.get("name"), str):
            if item["name"] in names:
                problems.append(f'{loc}.name: "{item["name"]}" is listed twice')
            names.append(item["name"])
    weights = [a.get("weight") for a in attrs if isinstance(a, Mapping)]
    if attrs and all(isinstance(w, int | float) and not isinstance(w, bool) and w == 0 for w in weights):
        problems.append("attributes: every weight is 0; at least one attribute needs a positive weight")
    club = data.get("club", [])
    if not isinstance(club, list) or not all(isinstance(c, str) for c in club):
        problems.append("club: must be a list of account ids (strings)")
        club = []
    for key in ("learned_at", "as_of"):
        if key in data and not isinstance(data[key], datetime | date):
            problems.append(f"{key}: must be a TOML date or date-time, got {data[key]!r}")
    settings = data.get("settings", {})
    if not isinstance(settings, Mapping):
        problems.append("settings: must be a table")
        settings = {}
    if problems:
        raise ProfileError(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"- {p}" for p in problems))

    attributes = tuple(
        ProfileAttribute(**{k: (tuple(v) if k == "values" else v) for k, v in item.items()}) for item in attrs
    )
    stated = data.get("version")
    profile = Profile(
        attributes=attributes,
        club_ids=tuple(club),
        learned_at=_utc(data["learned_at"]) if "learned_at" in data else None,
        as_of=_utc(data["as_of"]) if "as_of" in data else None,
        settings=dict(settings),
    )
    if stated is not None and stated != profile.version:
        profile = replace(
            profile, notes=(f"edited since it was written: version {stated} is now {profile.version}",)
        )
    return profile


def _attribute_problems(item: Mapping[str, Any], loc: str) -> list[str]:
    problems: list[str] = []
    for key in item:
        if key not in _ATTRIBUTE_KEYS:
            problems.append(f'{loc}: unknown key "{key}"; allowed: {", ".join(_ATTRIBUTE_KEYS)}')
    name, kind = item.get("name"), item.get("kind")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{loc}.name: missing; the account column this attribute reads")
    if kind not in KINDS:
        problems.append(f"{loc}.kind: {kind!r} is not allowed; allowed: {', '.join(KINDS)}")
    weight = item.get("weight")
    if not _is_real(weight) or weight < 0:
        problems.append(f"{loc}.weight: must be a number >= 0, got {weight!r}")
    for key in ("club_share", "book_share"):
        if key in item and item[key] is not None and (not _is_real(item[key]) or not 0 <= item[key] <= 1):
            problems.append(f"{loc}.{key}: must be a number between 0 and 1, got {item[key]!r}")
    if kind == "categorical":
        values = item.get("values")
        if not isinstance(values, list | tuple) or not values:
            problems.append(
                f'{loc}.values: missing; a categorical attribute needs a non-empty list, e.g. ["DE", "FR"]'
            )
        elif not all(isinstance(v, str) and v.strip() for v in values):
            problems.append(f"{loc}.values: every value must be a non-empty text, got {list(values)!r}")
        for key in ("low", "high", "half_life"):
            if item.get(key) is not None:
                problems.append(f'{loc}.{key}: only numeric attributes have "{key}"; this one is categorical')
        if item.get("log"):
            problems.append(f'{loc}.log: only numeric attributes have "log"; this one is categorical')
    elif kind == "numeric":
        low, high, log = item.get("low"), item.get("high"), item.get("log", False)
        for key, value in (("low", low), ("high", high)):
            if not _is_real(value):
                problems.append(f"{loc}.{key}: a numeric attribute needs a number, got {value!r}")
        if _is_real(low) and _is_real(high) and low > high:
            problems.append(f"{loc}.low/high: low ({low:g}) must not exceed high ({high:g})")
        if not isinstance(log, bool):
            problems.append(f"{loc}.log: must be true or false, got {log!r}")
        elif log and _is_real(low) and low <= 0:
            problems.append(f"{loc}.low: must be > 0 on a log scale (log = true), got {low:g}")
        half_life = item.get("half_life")
        if half_life is not None and (
            not _is_real(half_life) or (half_life <= 1 if log is True else half_life <= 0)
        ):
            need = "a factor > 1 (log = true)" if log is True else "a number > 0"
            problems.append(f"{loc}.half_life: must be {need}, got {half_life!r}")
        if "values" in item and item["values"]:
            problems.append(f'{loc}.values: only categorical attributes have "values"; this one is numeric')
    return problems


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
