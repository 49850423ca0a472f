"""A row-by-row reference implementation of the fit, written straight from the documented formulas.

The tests check the vectorised `scoring.fit.score` against it; the benchmark uses it as the naive baseline.
Deliberately plain Python: one dict per row, one loop per attribute.
"""

from __future__ import annotations

import math

import pandas as pd

from scoring.profile import Profile, format_number


def naive_score(
    accounts: pd.DataFrame, profile: Profile, a: float = 75, b: float = 50, c: float = 25, max_len: int = 1024
) -> list[tuple[int, str, str, float]]:
    attrs = sorted((x for x in profile.attributes if x.weight > 0), key=lambda x: (-x.weight, x.name))
    total = sum(x.weight for x in attrs)
    out = []
    for row in accounts.to_dict("records"):
        weighted = known = 0.0
        reasons = []
        for attr in attrs:
            value = row[attr.name]
            label = attr.name.replace("_", " ")
            if attr.kind == "categorical":
                text = None if value is None or value is pd.NA else str(value).strip()
                if not text:
                    reasons.append(f"? {label} unknown")
                    continue
                known += attr.weight
                wanted = {v.strip().casefold(): v for v in attr.values}
                if text.casefold() in wanted:
                    weighted += attr.weight
                    reasons.append(f"+ {label} is {wanted[text.casefold()]}")
                else:
                    shown = ", ".join(list(attr.values[:4]) + (["…"] if len(attr.values) > 4 else []))
                    reasons.append(f"- {label} {text} (profile: {shown})")
                continue
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                reasons.append(f"? {label} unknown")
                continue
            known += attr.weight
            value = float(value)
            if attr.log:
                x = math.log10(value) if value > 0 else -math.inf
                lo, hi, unit = math.log10(attr.low), math.log10(attr.high), math.log10(attr.half_life)
            else:
                x, lo, hi, unit = value, attr.low, attr.high, attr.half_life
            distance = max(lo - x, x - hi, 0.0)
            match = 2.0 ** (-distance / unit)
            weighted += attr.weight * match
            band = f"{format_number(attr.low)}-{format_number(attr.high)}"
            low, high = format_number(attr.low), format_number(attr.high)
            emp = attr.name == "employees"
            if x < lo:
                side = f"fewer than {low} employees" if emp else f"{label} below {low}"
                near = f"slightly {side}" if emp else f"{label} slightly below {low}"
            elif x > hi:
                side = f"more than {high} employees" if emp else f"{label} above {high}"
                near = f"slightly {side}" if emp else f"{label} slightly above {high}"
            else:
                reasons.append(f"+ {band} employees" if emp else f"+ {label} {band}")
                continue
            reasons.append(f"~ {near} (profile: {band})" if match >= 0.5 else f"- {side} (profile: {band})")
        score = min(max(math.floor(weighted / total * 100 + 0.5), 0), 100)
        tier = "A" if score >= a else "B" if score >= b else "C" if score >= c else "D"
        text = "; ".join(reasons)
        if len(text) > max_len:
            kept = []
            for r in reasons:
                if len("; ".join([*kept, r, "…"])) > max_len:
                    break
                kept.append(r)
            text = "; ".join([*kept, "…"]) if kept else reasons[0][: max_len - 1] + "…"
        out.append((score, tier, text, round(known / total, 4)))
    return out
