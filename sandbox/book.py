"""The deterministic sample book: accounts and deals with realistic firmographics and a planted ICP.

One generator feeds `icp demo`, the tests, the benchmarks and the sandbox's seed, so all of them see the
same kind of book. It is pure numpy/pandas (vectorised, so a 1,000,000-account book takes seconds) and
depends on nothing else in the project: the sandbox must stay importable on its own.

The planted ICP: accounts in Manufacturing or Logistics, with 200-2,500 employees, in DE, FR, NL or GB
buy more often, buy bigger, buy again, refer others, grow subsidiaries and close faster. Each of the three
traits adds to an account's hidden propensity, so a profile learned from the best customers should recover
them, and a backtest on later deals should show lift (and none once outcomes are shuffled).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

INDUSTRIES = [
    "Manufacturing",
    "Logistics",
    "Software",
    "Healthcare",
    "Financial Services",
    "Retail",
    "Education",
    "Energy",
    "Media",
    "Construction",
    "Hospitality",
    "Agriculture",
    "Telecommunications",
    "Government",
    "Nonprofit",
]
INDUSTRY_WEIGHTS = [12, 8, 14, 9, 9, 10, 6, 5, 5, 6, 4, 3, 4, 3, 2]

COUNTRIES = ["US", "GB", "DE", "FR", "NL", "ES", "IT", "CA", "BR", "IN", "AU", "JP", "SE", "PL", "MX"]
COUNTRY_WEIGHTS = [22, 9, 10, 9, 5, 6, 5, 6, 6, 6, 4, 3, 3, 3, 3]
CITIES = {
    "US": [
        ("CA", "San Francisco"),
        ("NY", "New York"),
        ("TX", "Austin"),
        ("IL", "Chicago"),
        ("MA", "Boston"),
    ],
    "GB": [("England", "London"), ("England", "Manchester"), ("Scotland", "Edinburgh")],
    "DE": [("BY", "München"), ("BE", "Berlin"), ("HH", "Hamburg"), ("NW", "Köln")],
    "FR": [("IDF", "Paris"), ("ARA", "Lyon"), ("PAC", "Marseille"), ("NAQ", "Bordeaux")],
    "NL": [("NH", "Amsterdam"), ("ZH", "Rotterdam"), ("NB", "Eindhoven")],
    "ES": [("MD", "Madrid"), ("CT", "Barcelona")],
    "IT": [("LOM", "Milano"), ("LAZ", "Roma")],
    "CA": [("ON", "Toronto"), ("QC", "Montréal"), ("BC", "Vancouver")],
    "BR": [("SP", "São Paulo"), ("RJ", "Rio de Janeiro")],
    "IN": [("KA", "Bengaluru"), ("MH", "Mumbai")],
    "AU": [("NSW", "Sydney"), ("VIC", "Melbourne")],
    "JP": [("13", "Tokyo"), ("27", "Osaka")],
    "SE": [("AB", "Stockholm"), ("O", "Göteborg")],
    "PL": [("MZ", "Warszawa"), ("MA", "Kraków")],
    "MX": [("CMX", "Ciudad de México"), ("NLE", "Monterrey")],
}
NAME_FIRST = [
    "Acme",
    "Nordwind",
    "Brightline",
    "Müller",
    "Société",
    "Øresund",
    "Atlas",
    "Vega",
    "Kestrel",
    "Helios",
    "Orion",
    "Blue Harbor",
    "Ironbridge",
    "Lumen",
    "Crescent",
    "Zenith",
    "Falkenberg",
    "Rivière",
    "Polaris",
    "Granite",
    "Summit",
    "Evergreen",
    "Copperleaf",
    "Northstar",
    "Sakura",
    "Cedar",
    "Riverside",
    "Quantum",
    "Pioneer",
    "Łódź",
    "São Bento",
    "Fjord",
    "Tamarind",
    "Aurora",
    "Keystone",
    "Maple",
    "Beacon",
    "Meridian",
]
NAME_SECOND = [
    "Industries",
    "Logistik",
    "Systems",
    "Health",
    "Capital",
    "Retail",
    "Learning",
    "Energy",
    "Media",
    "Bau",
    "Hotels",
    "Farms",
    "Telecom",
    "Works",
    "Labs",
    "Group",
    "Holdings",
    "Solutions",
    "Partners",
    "& Co",
]
NAME_SUFFIX = ["", " GmbH", " SAS", " Ltd", " Inc.", " B.V.", " S.p.A.", " AB", ""]
ACCOUNT_TYPES = ["Customer", "Prospect", "Partner", "Other"]
LEAD_SOURCES = ["Web", "Outbound", "Event", "Referral", "Partner", "Advertisement", "Webinar"]
OPEN_STAGES = ["Prospecting", "Qualification", "Proposal", "Negotiation"]

ICP_INDUSTRIES = ("Manufacturing", "Logistics")
ICP_EMPLOYEES = (200, 2500)
ICP_COUNTRIES = ("DE", "FR", "NL", "GB")

BOOK_START = pd.Timestamp("2021-01-01", tz="UTC")
BOOK_END = pd.Timestamp("2026-10-31", tz="UTC")


@dataclass(frozen=True)
class Book:
    """Accounts and deals in the canonical shape of docs/architecture.md, "Data model" (deals already mapped to won/lost)."""

    accounts: pd.DataFrame
    deals: pd.DataFrame


def generate_book(n_accounts: int = 2000, seed: int = 7) -> Book:
    """Build a book of `n_accounts` accounts and their deals; the same (n, seed) always gives the same book."""
    if n_accounts < 1:
        raise ValueError("n_accounts must be at least 1")
    rng = np.random.default_rng(seed)
    n = n_accounts
    idx = np.arange(n)

    industry = np.array(INDUSTRIES, dtype=object)[rng.choice(len(INDUSTRIES), n, p=_norm(INDUSTRY_WEIGHTS))]
    country_i = rng.choice(len(COUNTRIES), n, p=_norm(COUNTRY_WEIGHTS))
    country = np.array(COUNTRIES, dtype=object)[country_i]
    employees = np.round(np.exp(rng.normal(5.0, 1.6, n))).clip(1, 250_000).astype(np.int64)
    revenue = np.round(employees * np.exp(rng.normal(np.log(180_000), 0.5, n)), -3)

    in_industry = np.isin(industry, ICP_INDUSTRIES)
    in_size = (employees >= ICP_EMPLOYEES[0]) & (employees <= ICP_EMPLOYEES[1])
    in_country = np.isin(country, ICP_COUNTRIES)
    matches = in_industry.astype(int) + in_size.astype(int) + in_country.astype(int)

    # City/state: pick one of the country's cities with a per-account uniform draw.
    u = rng.random(n)
    state = np.empty(n, dtype=object)
    city = np.empty(n, dtype=object)
    for ci, code in enumerate(COUNTRIES):
        mask = country_i == ci
        options = CITIES[code]
        pick = (u[mask] * len(options)).astype(int)
        state[mask] = np.array([o[0] for o in options], dtype=object)[pick]
        city[mask] = np.array([o[1] for o in options], dtype=object)[pick]

    first = np.array(NAME_FIRST, dtype=object)[rng.integers(0, len(NAME_FIRST), n)]
    second = np.array(NAME_SECOND, dtype=object)[rng.integers(0, len(NAME_SECOND), n)]
    suffix = np.array(NAME_SUFFIX, dtype=object)[rng.integers(0, len(NAME_SUFFIX), n)]
    ids = pd.Series(idx + 1).map("ACC{:07d}".format).to_numpy(dtype=object)
    name = first + " " + second + suffix + " " + (idx + 1).astype(str)
    slug = pd.Series(first + second).str.lower().str.replace(r"[^a-z]", "", regex=True).to_numpy(dtype=object)
    domain = slug + (idx + 1).astype(str) + ".example"

    created_days = rng.integers(0, (BOOK_END - BOOK_START).days - 400, n)
    created_at = BOOK_START + pd.to_timedelta(created_days, unit="D")

    # Parent links: ~7% of accounts are subsidiaries; ICP parents are more likely to have them.
    parent_id = np.full(n, None, dtype=object)
    if n >= 20:
        is_child = rng.random(n) < 0.07
        parent_weight = 1.0 + 4.0 * (matches == 3) + 1.5 * (matches == 2)
        parent_pick = rng.choice(n, is_child.sum(), p=parent_weight / parent_weight.sum())
        child_idx = np.flatnonzero(is_child)
        ok = parent_pick != child_idx
        parent_id[child_idx[ok]] = ids[parent_pick[ok]]

    # Missing values, never silently zero: the scorer must cope.
    industry = np.where(rng.random(n) < 0.04, None, industry)
    country = np.where(rng.random(n) < 0.03, None, country)
    employees_s = pd.array(employees, dtype="Int64")
    employees_s[rng.random(n) < 0.07] = pd.NA
    revenue_s = pd.array(revenue, dtype="Float64")
    revenue_s[rng.random(n) < 0.15] = pd.NA

    accounts = pd.DataFrame(
        {
            "id": pd.array(ids, dtype="string"),
            "name": pd.array(name, dtype="string"),
            "domain": pd.array(domain, dtype="string"),
            "industry": pd.array(industry, dtype="string"),
            "employees": employees_s,
            "annual_revenue": revenue_s,
            "country": pd.array(country, dtype="string"),
            "state": pd.array(state, dtype="string"),
            "city": pd.array(city, dtype="string"),
            "parent_id": pd.array(parent_id, dtype="string"),
            "account_type": pd.array(
                np.array(ACCOUNT_TYPES, dtype=object)[rng.choice(4, n, p=[0.35, 0.5, 0.1, 0.05])],
                dtype="string",
            ),
            "created_at": created_at,
            "modified_at": created_at + pd.to_timedelta(rng.integers(0, 400, n), unit="D"),
        }
    )
    deals = _generate_deals(rng, ids, matches, employees, created_days)
    return Book(accounts=accounts, deals=deals)


def _generate_deals(rng, ids, matches, employees, created_days) -> pd.DataFrame:
    n = len(ids)
    propensity = np.array([0.6, 1.1, 2.0, 3.6])[matches]
    n_deals = rng.poisson(propensity)
    acct = np.repeat(np.arange(n), n_deals)
    m = len(acct)
    dm = matches[acct]
    win_p = np.array([0.12, 0.25, 0.45, 0.70])[dm]
    closed = rng.random(m) < 0.9
    won = closed & (rng.random(m) < win_p)

    span = (BOOK_END - BOOK_START).days
    start = created_days[acct]
    created_off = start + (rng.random(m) * (span - 30 - start)).astype(int)
    cycle = np.round(np.exp(rng.normal(np.log(90) - 0.25 * dm, 0.45, m))).astype(int).clip(7, 720)
    closed_off = np.minimum(created_off + cycle, span)
    size = np.nan_to_num(np.log10(np.maximum(employees[acct], 1)), nan=1.5)
    amount = np.round(np.exp(rng.normal(np.log(8_000) + 0.55 * size + 0.35 * dm, 0.6, m)), -2)

    referral_p = np.array([0.05, 0.10, 0.22, 0.40])[dm]
    is_ref = rng.random(m) < referral_p
    other_sources = np.array([s for s in LEAD_SOURCES if s not in ("Referral", "Partner")], dtype=object)
    lead_source = np.where(
        is_ref,
        np.where(rng.random(m) < 0.7, "Referral", "Partner"),
        other_sources[rng.integers(0, len(other_sources), m)],
    ).astype(object)
    lead_source[rng.random(m) < 0.05] = None

    stage = np.where(won, "Closed Won", "Closed Lost").astype(object)
    open_mask = ~closed
    stage[open_mask] = np.array(OPEN_STAGES, dtype=object)[rng.integers(0, len(OPEN_STAGES), open_mask.sum())]

    closed_at = pd.Series(BOOK_START + pd.to_timedelta(closed_off, unit="D"))
    closed_at[open_mask] = pd.NaT
    return pd.DataFrame(
        {
            "id": pd.array(pd.Series(np.arange(m) + 1).map("OPP{:08d}".format), dtype="string"),
            "account_id": pd.array(ids[acct], dtype="string"),
            "name": pd.array(pd.Series(np.arange(m) + 1).map("Deal {}".format), dtype="string"),
            "stage": pd.array(stage, dtype="string"),
            "amount": pd.array(amount, dtype="Float64"),
            "is_won": pd.array(won, dtype="boolean"),
            "is_closed": pd.array(closed, dtype="boolean"),
            "created_at": BOOK_START + pd.to_timedelta(created_off, unit="D"),
            "closed_at": closed_at.to_numpy(),
            "lead_source": pd.array(lead_source, dtype="string"),
        }
    )


def _norm(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return w / w.sum()


# ---------------------------------------------------------------------------------------------------------
# CSV export: what a CRM report export looks like, vendor headers and dirty cells included.

ACCOUNT_HEADERS = {
    "id": "Account ID",
    "name": "Account Name",
    "domain": "Website",
    "industry": "Industry",
    "employees": "Employees",
    "annual_revenue": "Annual Revenue",
    "country": "Billing Country",
    "state": "Billing State/Province",
    "city": "Billing City",
    "parent_id": "Parent Account ID",
    "account_type": "Type",
    "created_at": "Created Date",
    "modified_at": "Last Modified Date",
}
DEAL_HEADERS = {
    "id": "Opportunity ID",
    "account_id": "Account ID",
    "name": "Opportunity Name",
    "stage": "Stage",
    "amount": "Amount",
    "created_at": "Created Date",
    "closed_at": "Close Date",
    "lead_source": "Lead Source",
}
WON_STAGES = ["Closed Won"]
LOST_STAGES = ["Closed Lost"]


def export_csv(
    book: Book,
    accounts_path: str | Path,
    deals_path: str | Path | None,
    *,
    dirty: bool = True,
    seed: int = 11,
) -> None:
    """Write the book as a CRM report export would: vendor headers and, with `dirty`, messy cells.

    Dirty cells are the kinds real exports carry: thousands separators ("1,200"), "n/a", revenue written
    as "$2.5M", URLs with scheme and "www." instead of bare domains, stray spaces around categories.
    """
    rng = np.random.default_rng(seed)
    acc = book.accounts.copy()
    out = pd.DataFrame({header: acc[col] for col, header in ACCOUNT_HEADERS.items()})
    out["Employees"] = acc["employees"].astype("object")
    out["Annual Revenue"] = acc["annual_revenue"].astype("object")
    out["Created Date"] = acc["created_at"].dt.strftime("%Y-%m-%d")
    out["Last Modified Date"] = acc["modified_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if dirty:
        n = len(out)
        emp = acc["employees"]
        fmt = (rng.random(n) < 0.12) & emp.notna().to_numpy() & (emp.fillna(0).to_numpy() >= 1000)
        out.loc[fmt, "Employees"] = emp[fmt].map("{:,}".format)
        na = emp.isna().to_numpy() & (rng.random(n) < 0.5)
        out.loc[na, "Employees"] = "n/a"
        rev = acc["annual_revenue"]
        mill = (rng.random(n) < 0.1) & rev.notna().to_numpy() & (rev.fillna(0).to_numpy() >= 1e6)
        out.loc[mill, "Annual Revenue"] = rev[mill].map(lambda v: f"${v / 1e6:.1f}M")
        url = rng.random(n) < 0.3
        out.loc[url, "Website"] = "https://www." + acc.loc[url, "domain"] + "/"
        pad = (rng.random(n) < 0.05) & acc["industry"].notna().to_numpy()
        out.loc[pad, "Industry"] = " " + acc.loc[pad, "industry"] + " "
    Path(accounts_path).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(accounts_path, index=False, quoting=csv.QUOTE_MINIMAL)
    if deals_path is not None:
        deals = book.deals
        d = pd.DataFrame({header: deals[col] for col, header in DEAL_HEADERS.items()})
        d["Created Date"] = deals["created_at"].dt.strftime("%Y-%m-%d")
        d["Close Date"] = deals["closed_at"].dt.strftime("%Y-%m-%d")
        d.to_csv(deals_path, index=False, quoting=csv.QUOTE_MINIMAL)
