"""Hypothesis strategies for account frames and profiles (small, messy, with missing values)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from scoring.profile import Profile, ProfileAttribute

INDUSTRIES = [
    "Manufacturing",
    "Logistics",
    "Software",
    "Retail",
    " manufacturing ",
    "LOGISTICS",
    "",
    "Energy",
]
COUNTRIES = ["DE", "FR", "US", "BR", "de", " GB", "JP"]


@st.composite
def accounts_frames(draw, min_size: int = 0, max_size: int = 60) -> pd.DataFrame:
    """Accounts with the default profile attributes: text with case/space variants and blanks, counts with
    zeros and NAs, revenue spanning orders of magnitude."""
    n = draw(st.integers(min_size, max_size))
    maybe = lambda values: st.one_of(st.none(), st.sampled_from(values))  # noqa: E731
    industry = draw(st.lists(maybe(INDUSTRIES), min_size=n, max_size=n))
    country = draw(st.lists(maybe(COUNTRIES), min_size=n, max_size=n))
    employees = draw(st.lists(st.one_of(st.none(), st.integers(0, 300_000)), min_size=n, max_size=n))
    revenue = draw(
        st.lists(st.one_of(st.none(), st.floats(0, 1e11, allow_nan=False)), min_size=n, max_size=n)
    )
    return pd.DataFrame(
        {
            "id": pd.array([f"A{i:05d}" for i in range(n)], dtype="string"),
            "industry": pd.array(industry, dtype="string"),
            "employees": pd.array(employees, dtype="Int64"),
            "annual_revenue": pd.array(revenue, dtype="Float64"),
            "country": pd.array(country, dtype="string"),
        }
    )


@st.composite
def profiles(draw) -> Profile:
    """A valid profile over the default attributes, with arbitrary bands, values and weights."""
    attrs = []
    names = draw(
        st.lists(
            st.sampled_from(["industry", "employees", "annual_revenue", "country"]), min_size=1, unique=True
        )
    )
    for name in names:
        weight = draw(st.floats(0, 5, allow_nan=False))
        if name in ("industry", "country"):
            pool = INDUSTRIES if name == "industry" else COUNTRIES
            values = draw(st.lists(st.sampled_from([v for v in pool if v.strip()]), min_size=1, max_size=4))
            attrs.append(ProfileAttribute(name, "categorical", weight, values=tuple(values)))
        else:
            log = draw(st.booleans())
            low = draw(st.floats(1, 1e6, allow_nan=False))
            high = low * draw(st.floats(1, 1000, allow_nan=False))
            half_life = draw(st.floats(1.1, 10)) if log else draw(st.floats(0.5, 1e6))
            attrs.append(
                ProfileAttribute(name, "numeric", weight, low=low, high=high, log=log, half_life=half_life)
            )
    if all(a.weight == 0 for a in attrs):
        attrs[0] = ProfileAttribute(**{**attrs[0].__dict__, "weight": 1.0})
    return Profile(attributes=tuple(attrs))


def as_float(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype="float64", na_value=np.nan)
