"""The CSV connector against the sample book's dirty export, and one test per kind of bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import csvfile
from connectors.csvfile import (
    SCORE_COLUMNS,
    BookError,
    iter_accounts,
    read_accounts,
    read_book,
    read_deals,
    write_scored,
)
from connectors.schema import KIND_DTYPES, TEXT_DTYPE
from sandbox.book import ACCOUNT_HEADERS, DEAL_HEADERS, LOST_STAGES, WON_STAGES, export_csv, generate_book

STAGES = {"won": WON_STAGES, "lost": LOST_STAGES}
DEAL_COLUMNS = dict(DEAL_HEADERS)  # includes "name" -> "Opportunity Name", an extra attribute


@pytest.fixture(scope="module")
def book():
    return generate_book(600, seed=3)


@pytest.fixture
def export(book, tmp_path):
    accounts, deals = tmp_path / "accounts.csv", tmp_path / "deals.csv"
    export_csv(book, accounts, deals, dirty=True)
    return accounts, deals


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """The sample book as the reader returns it: text as TEXT_DTYPE whatever pandas made of "string" (Arrow
    with pyarrow installed), datetimes in the schema's unit (pandas 2 makes the sample's nanoseconds)."""
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.StringDtype):
            out[column] = out[column].astype(TEXT_DTYPE)
        elif pd.api.types.is_datetime64_any_dtype(out[column].dtype):
            out[column] = out[column].astype(KIND_DTYPES["datetime"])
    return out


def _raw(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _scores(ids, **overrides) -> pd.DataFrame:
    ids = list(ids)
    frame = pd.DataFrame(
        {
            "icp_segment": "Mid-market",
            "icp_fit_score": 72.0,
            "icp_tier": "B",
            "icp_reasons": "industry is Manufacturing",
            "icp_scored_at": pd.Timestamp("2026-05-01T02:00:00Z"),
            "icp_model": "p-1a2b3c",
        },
        index=pd.Index(ids, name="id"),
    )
    for column, value in overrides.items():
        frame[column] = value
    return frame


# ---------------------------------------------------------------------------------------------------------
# Reading the dirty export


def test_dirty_export_reads_back_as_the_clean_book(book, export):
    accounts, report = read_accounts(export[0], ACCOUNT_HEADERS)
    clean = _canonical(book.accounts)
    raw_revenue = _raw(export[0])["Annual Revenue"]
    # "$2.5M" is unambiguous but rounded by the export: compare those cells within the rounding, the rest exactly.
    abbreviated = raw_revenue.str.contains("M", regex=False).to_numpy()
    assert abbreviated.sum() > 5  # the export did write some
    diff = (accounts["annual_revenue"][abbreviated] - clean["annual_revenue"][abbreviated]).abs()
    assert (diff <= 50_000).all()
    clean.loc[abbreviated, "annual_revenue"] = accounts.loc[abbreviated, "annual_revenue"]
    pd.testing.assert_frame_equal(accounts, clean)
    assert report.unparseable == {}  # the export's dirt is all readable
    assert report.rows == {"accounts": len(book.accounts)}


def test_dirty_employees_are_parsed_where_unambiguous_and_counted_otherwise(book, export):
    raw = _raw(export[0])
    assert raw["Employees"].str.contains(",").any() and (raw["Employees"] == "n/a").any()
    # Plant cells no reader could settle, on known spreadsheet rows (header = row 1).
    junk = {5: "about 50", 9: "50-100", 14: "12%"}
    for i, value in junk.items():
        raw.loc[i, "Employees"] = value
    raw.loc[20, "Created Date"] = "03/04/2024"
    raw.to_csv(export[0], index=False)

    accounts, report = read_accounts(export[0], ACCOUNT_HEADERS)
    expected = book.accounts["employees"].copy()
    expected[list(junk)] = pd.NA
    pd.testing.assert_series_equal(accounts["employees"], expected)
    tally = report.unparseable["accounts.employees"]
    assert tally.count == 3
    assert tally.examples == [(7, "about 50"), (11, "50-100"), (16, "12%")]
    assert report.unparseable["accounts.created_at"].examples == [(22, "03/04/2024")]
    assert accounts["created_at"].isna().sum() == 1
    assert any(line.startswith("accounts.employees: 3 unreadable") for line in report.lines())


def test_read_book_deals_match_the_clean_book(book, export):
    result = read_book(export[0], export[1], ACCOUNT_HEADERS, DEAL_COLUMNS, STAGES)
    expected = _canonical(book.deals[list(result.deals.columns)])
    pd.testing.assert_frame_equal(result.deals, expected)
    assert result.report.orphan_deals.count == 0
    assert set(result.report.unknown_stages) == {"Prospecting", "Qualification", "Proposal", "Negotiation"}
    assert sum(result.report.unknown_stages.values()) == int((~book.deals["is_closed"]).sum())


def test_read_book_without_deals(export):
    result = read_book(export[0], None, ACCOUNT_HEADERS)
    assert result.deals is None and len(result.accounts) == 600


def test_stages_map_case_insensitively_and_unknown_stages_are_open(tmp_path):
    deals = _write(
        tmp_path / "deals.csv",
        "Account,Stage,Value\nA1,closed won,100\nA1, CLOSED LOST ,50\nA2,Closed - Won,70\nA2,Demo,10\nA2,,5\n",
    )
    frame, report = read_deals(deals, {"account_id": "Account", "stage": "Stage", "amount": "Value"}, STAGES)
    assert frame["is_won"].tolist() == [True, False, False, False, False]
    assert frame["is_closed"].tolist() == [True, True, False, False, False]
    assert frame["is_won"].dtype == "boolean"
    # A typo'd won stage is open but visible in the report, with the blank stage.
    assert report.unknown_stages == {"Closed - Won": 1, "Demo": 1, "(blank)": 1}
    assert frame["id"].isna().all()  # no deal id column: all missing, not invented


def test_orphan_deals_are_left_out_and_unknown_parents_kept(tmp_path):
    accounts = _write(tmp_path / "a.csv", "id,name,parent_id\nA1,One,\nA2,Two,A1\nA3,Three,GONE\n")
    deals = _write(tmp_path / "d.csv", "account_id,stage,amount\nA1,Won,10\nZZ,Won,99\nA3,Lost,1\n,Won,5\n")
    result = read_book(accounts, deals, {}, {}, {"won": ["Won"], "lost": ["Lost"]})
    assert result.deals["account_id"].tolist() == ["A1", "A3"]
    assert result.report.orphan_deals.count == 2
    assert result.report.orphan_deals.examples == [(3, "ZZ"), (5, "")]
    assert result.accounts["parent_id"].tolist()[1:] == ["A1", "GONE"]
    assert result.report.unknown_parents.examples == [(4, "GONE")]


def test_verbatim_canonical_headers_extras_and_name_default(tmp_path):
    path = _write(tmp_path / "a.csv", "Account ID,domain,Employees,Tier Custom\nA1,WWW.Acme.com,7,Gold\n")
    accounts, _ = read_accounts(path, {"id": "account id", "segment_hint": "Tier Custom"})
    assert accounts["name"].tolist() == ["A1"]  # name falls back to the id column
    assert accounts["domain"].tolist() == ["acme.com"]  # taken verbatim
    assert accounts["employees"].isna().all()  # "Employees" is not literally "employees": not taken
    assert accounts["segment_hint"].tolist() == ["Gold"]


def test_unicode_and_bom_survive_reading(tmp_path):
    names = ["Łódź Works", "São Bento Ltda", "Müller GmbH", "東京ロジ株式会社", "شركة النقل", "Øresund 🚢"]
    text = "Account ID,Account Name\n" + "".join(f"A{i},{n}\n" for i, n in enumerate(names))
    path = _write(tmp_path / "a.csv", text, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    accounts, _ = read_accounts(path, {"id": "Account ID", "name": "Account Name"})
    assert accounts["name"].tolist() == names


def test_semicolon_csv_with_decimal_commas(tmp_path):
    path = _write(tmp_path / "a.csv", "Id;Umsatz;Mitarbeiter\nA1;1.200.000,50;1.200\nA2;3,5;12\n")
    accounts, report = read_accounts(
        path, {"id": "Id", "annual_revenue": "Umsatz", "employees": "Mitarbeiter"}
    )
    assert accounts["annual_revenue"].tolist() == [1200000.5, 3.5]
    assert accounts["employees"].tolist() == [1200, 12]
    assert report.unparseable == {}


def test_blank_lines_are_skipped_but_rows_keep_spreadsheet_numbers(tmp_path):
    path = _write(tmp_path / "a.csv", "id,employees\nA1,1\n\nA2,lots\n,\n")
    accounts, report = read_accounts(path, {})
    assert accounts["id"].tolist() == ["A1", "A2"]
    assert report.unparseable["accounts.employees"].examples == [(4, "lots")]


def test_blank_lines_above_the_header_still_number_rows_as_a_spreadsheet(tmp_path):
    path = _write(tmp_path / "a.csv", "\n \nid,name\nA1,x\nA1,y\n")
    with pytest.raises(BookError, match=r'"A1" on rows 4 and 5'):
        read_accounts(path, {})


def test_iter_accounts_matches_read_accounts(export):
    whole, report = read_accounts(export[0], ACCOUNT_HEADERS)
    chunks = list(iter_accounts(export[0], ACCOUNT_HEADERS, chunksize=128, decimal="."))
    assert len(chunks) == 5
    pd.testing.assert_frame_equal(pd.concat([c for c, _ in chunks], ignore_index=True), whole)
    merged = chunks[0][1]
    for _, r in chunks[1:]:
        merged.merge(r)
    assert merged.rows == report.rows


def test_iter_accounts_catches_duplicates_across_chunks(tmp_path):
    path = _write(tmp_path / "a.csv", "id\nA1\nA2\nA3\nA1\n")
    with pytest.raises(BookError, match=r'"A1" on rows 2 and 5'):
        list(iter_accounts(path, {}, chunksize=2))


# ---------------------------------------------------------------------------------------------------------
# Bad input, one test each


def test_missing_file(tmp_path):
    with pytest.raises(BookError) as e:
        read_accounts(tmp_path / "nope.csv", {"id": "Account ID"})
    assert str(e.value).startswith(f"{tmp_path / 'nope.csv'}: no such file")
    assert e.value.path == tmp_path / "nope.csv"


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(BookError, match="is a directory"):
        read_accounts(tmp_path, {"id": "Account ID"})


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xef\xbb\xbf", b"  \r\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "accounts.csv"
    path.write_bytes(content)
    with pytest.raises(BookError, match=r"accounts\.csv: is empty; expected a header row"):
        read_accounts(path, {"id": "Account ID"})


def test_header_only(tmp_path):
    path = _write(tmp_path / "accounts.csv", "Account ID,Account Name\n")
    with pytest.raises(BookError, match=r"accounts\.csv: has a header but no rows"):
        read_accounts(path, {"id": "Account ID"})
    deals = _write(tmp_path / "deals.csv", "Account ID,Stage\n\n")
    with pytest.raises(BookError, match=r"deals\.csv: has a header but no rows.*leave the deals file out"):
        read_deals(deals, {"account_id": "Account ID", "stage": "Stage"}, STAGES)


def test_excel_workbook_is_not_a_csv(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 64)
    with pytest.raises(BookError, match=r"is an Excel workbook, not a CSV file.*CSV UTF-8"):
        read_accounts(path, {"id": "Account ID"})


def test_non_utf8_file(tmp_path):
    path = _write(
        tmp_path / "accounts.csv", "Account ID,Account Name\nA1,Société Générale\n", encoding="cp1252"
    )
    with pytest.raises(BookError, match=r"is not UTF-8 text \(found byte 0xE9\); save it as CSV UTF-8"):
        read_accounts(path, {"id": "Account ID"})


def test_ragged_row(tmp_path):
    path = _write(tmp_path / "accounts.csv", "Account ID,Account Name\nA1,Acme\nA2,Acme, Inc.\n")
    with pytest.raises(
        BookError, match=r"line 3 has 3 fields but the header has 2; a value containing a comma"
    ):
        read_accounts(path, {"id": "Account ID"})
    first = _write(tmp_path / "first.csv", "Account ID,Account Name\nA1,Acme, Inc.\n")
    with pytest.raises(BookError, match=r"row 2 has more fields than the header's 2"):
        read_accounts(first, {"id": "Account ID"})
    # Only some columns mapped: the shifted row must still be caught, not read with misplaced values.
    wide = _write(tmp_path / "wide.csv", "id,name,industry\nA1,Acme,Retail\nA2,Acme, Inc.,Retail\n")
    with pytest.raises(BookError, match=r"line 3 has 4 fields but the header has 3"):
        read_accounts(wide, {"industry": "industry"})


def test_unmapped_required_column(tmp_path):
    path = _write(tmp_path / "accounts.csv", "Account ID,Name\nA1,Acme\n")
    with pytest.raises(BookError) as e:
        read_accounts(path, {"name": "Name"})
    assert e.value.problems == (
        '[csv.accounts.columns] id is required: map it to one of the headers: "Account ID", "Name"',
    )
    assert str(e.value).startswith(f"{path}: 1 problem(s) with [csv.accounts.columns]:")


def test_unknown_columns_are_all_listed_at_once(tmp_path):
    path = _write(tmp_path / "accounts.csv", "Account ID,Name,Industry\nA1,Acme,Retail\n")
    with pytest.raises(BookError) as e:
        read_accounts(path, {"id": "Acount ID", "industry": "Sector", "employees": 5})
    headers = '"Account ID", "Name", "Industry"'
    assert e.value.problems == (
        f'[csv.accounts.columns] id = "Acount ID": no such header in accounts.csv (did you mean "Account ID"?); '
        f"headers are: {headers}",
        f'[csv.accounts.columns] industry = "Sector": no such header in accounts.csv; headers are: {headers}',
        "[csv.accounts.columns] employees = 5: must be a header of accounts.csv, in quotes",
    )
    assert str(e.value).count("\n  [csv.accounts.columns]") == 3


def test_a_header_written_twice_cannot_be_mapped(tmp_path):
    path = _write(tmp_path / "accounts.csv", "Account ID,Name,Name\nA1,Acme,Acme Corp\n")
    with pytest.raises(BookError, match=r'has 2 columns headed "Name" \(columns B, C\); rename all but one'):
        read_accounts(path, {"id": "Account ID", "name": "Name"})


def test_duplicate_account_ids(tmp_path):
    path = _write(tmp_path / "accounts.csv", "Account ID,Name\nA1,x\nA2,x\nA1,x\nA3,x\nA2,x\nA2,x\n")
    with pytest.raises(BookError) as e:
        read_accounts(path, {"id": "Account ID"})
    assert str(e.value) == (
        f'{path}: duplicate account ids in column "Account ID" (each account must appear once): '
        '"A1" on rows 2 and 4; "A2" on rows 3, 6 and 7'
    )


def test_blank_account_ids(tmp_path):
    path = _write(tmp_path / "accounts.csv", "Account ID,Name\nA1,x\n ,Orphan Co\nA3,y\n,Other\n")
    with pytest.raises(BookError, match=r'row\(s\) 3, 5 have no account id in column "Account ID"'):
        read_accounts(path, {"id": "Account ID"})


def test_duplicate_deal_ids(tmp_path):
    path = _write(tmp_path / "deals.csv", "Opp,Account,Stage\nO1,A1,Won\nO1,A1,Won\n")
    with pytest.raises(BookError, match=r'duplicate deal ids in column "Opp".*"O1" on rows 2 and 3'):
        read_deals(path, {"id": "Opp", "account_id": "Account", "stage": "Stage"}, {"won": ["Won"]})


def test_stage_config_problems_are_listed_with_column_problems(tmp_path):
    path = _write(tmp_path / "deals.csv", "Account,Stage\nA1,Won\n")
    stages = {"won": ["Won", "Closed"], "lost": ["closed"], "open": ["Demo"]}
    with pytest.raises(BookError) as e:
        read_deals(path, {"account_id": "Account", "is_won": "Stage"}, stages)
    problems = e.value.problems
    assert len(problems) == 4
    assert (
        problems[0]
        == "[csv.deals.columns] is_won: is derived from [csv.deals.stages]; remove it from [csv.deals.columns]"
    )
    assert problems[1].startswith(
        '[csv.deals.columns] stage is required: map it to one of the headers: "Account"'
    )
    assert problems[2].startswith("[csv.deals.stages] open: unknown key; allowed keys are won and lost")
    assert problems[3] == '[csv.deals.stages] "closed": listed under both won and lost; keep each in one'


def test_won_stages_are_required(tmp_path):
    path = _write(tmp_path / "deals.csv", "Account,Stage\nA1,Won\n")
    with pytest.raises(BookError, match=r'\[csv.deals.stages\] won is required: .* won = \["Closed Won"\]'):
        read_deals(path, {"account_id": "Account", "stage": "Stage"}, {"lost": ["Lost"]})


def test_read_book_reports_both_files_at_once(tmp_path):
    accounts = _write(tmp_path / "accounts.csv", "Account ID\nA1\n")
    with pytest.raises(BookError) as e:
        read_book(accounts, tmp_path / "deals.csv", {"id": "ID"}, {"account_id": "x", "stage": "y"}, STAGES)
    message = str(e.value)
    assert '[csv.accounts.columns] id = "ID": no such header in accounts.csv' in message
    assert f"{tmp_path / 'deals.csv'}: no such file" in message
    assert len(e.value.problems) == 2


# ---------------------------------------------------------------------------------------------------------
# Writing scores back


def test_write_scored_keeps_the_original_and_appends_icp_columns(export, tmp_path):
    accounts_path = export[0]
    original = _raw(accounts_path)
    scored_ids = original["Account ID"].iloc[::2]
    out = tmp_path / "out" / "scored.csv"
    n = write_scored(accounts_path, out, _scores(scored_ids), columns=ACCOUNT_HEADERS)
    assert n == len(scored_ids)
    result = _raw(out)
    assert list(result.columns) == list(original.columns) + list(SCORE_COLUMNS)
    # Original raw text, rows and order untouched: "1,200", "$2.5M", " Manufacturing ", URLs ...
    pd.testing.assert_frame_equal(result[original.columns], original)
    first, second = result.iloc[0], result.iloc[1]
    assert first["icp_fit_score"] == "72" and first["icp_tier"] == "B"
    assert first["icp_scored_at"] == "2026-05-01T02:00:00Z" and first["icp_model"] == "p-1a2b3c"
    assert (second[list(SCORE_COLUMNS)] == "").all()  # unscored rows get empty cells


def test_write_scored_neutralises_formulas_but_not_negative_numbers(tmp_path):
    names = [
        '=HYPERLINK("http://evil","x")',
        "@SUM(A1:A9)",
        "+1",
        "-12.5",
        "-2+3+cmd|' /C calc'!A0",
        "\tx",
        "Acme",
    ]
    text = "id,name,delta\n" + "".join(
        f'A{i},"{n.replace(chr(34), chr(34) * 2)}",{-i}\n' for i, n in enumerate(names)
    )
    src = _write(tmp_path / "a.csv", text)
    scores = _scores(
        [f"A{i}" for i in range(len(names))], icp_reasons="+ industry is Manufacturing; - country BR"
    )
    write_scored(src, tmp_path / "out.csv", scores)
    result = _raw(tmp_path / "out.csv")
    assert result["name"].tolist() == [
        '\'=HYPERLINK("http://evil","x")',
        "'@SUM(A1:A9)",
        "'+1",
        "-12.5",
        "'-2+3+cmd|' /C calc'!A0",
        "'\tx",
        "Acme",
    ]
    assert result["delta"].tolist() == ["0"] + [f"-{i}" for i in range(1, len(names))]
    assert (result["icp_reasons"] == "'+ industry is Manufacturing; - country BR").all()


def test_write_scored_neutralises_a_formula_header(tmp_path):
    src = _write(tmp_path / "a.csv", "id,=1+1\nA1,x\n")
    write_scored(src, tmp_path / "out.csv", _scores(["A1"]))
    assert _raw(tmp_path / "out.csv").columns[1] == "'=1+1"


def test_unicode_bom_and_crlf_roundtrip_through_write_scored(tmp_path):
    names = ["Łódź Works", "東京ロジ株式会社", "Øresund 🚢", 'Say "hi", friend', "two\nlines"]
    body = "".join(f'A{i},"{n.replace(chr(34), chr(34) * 2)}"\r\n' for i, n in enumerate(names))
    src = _write(tmp_path / "a.csv", "Account ID,Account Name\r\n" + body, encoding="utf-8-sig")
    out = tmp_path / "out.csv"
    write_scored(src, out, _scores([f"A{i}" for i in range(len(names))]), columns={"id": "Account ID"})
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfAccount ID,Account Name,icp_segment")
    assert data.count(b"\r\n") == len(names) + 1
    accounts, _ = read_accounts(out, {"id": "Account ID", "name": "Account Name"})
    assert accounts["name"].tolist() == names


def test_rescoring_an_output_overwrites_its_icp_columns(tmp_path):
    src = _write(tmp_path / "a.csv", "id,name\nA1,x\nA2,y\n")
    first = tmp_path / "first.csv"
    write_scored(src, first, _scores(["A1", "A2"]))
    write_scored(first, first, _scores(["A2"], icp_tier="A"))
    result = _raw(first)
    assert list(result.columns) == ["id", "name", *SCORE_COLUMNS]
    assert result["icp_tier"].tolist() == ["", "A"]


def test_write_scored_needs_every_score_column_and_an_id(tmp_path):
    src = _write(tmp_path / "a.csv", "Account ID,name\nA1,x\n")
    with pytest.raises(ValueError, match="icp_model"):
        write_scored(
            src, tmp_path / "o.csv", _scores(["A1"]).drop(columns="icp_model"), columns={"id": "Account ID"}
        )
    with pytest.raises(BookError, match=r"id is required: map it to one of the headers"):
        write_scored(src, tmp_path / "o.csv", _scores(["A1"]))
    assert not (tmp_path / "o.csv").exists()


def test_scores_not_indexed_by_account_id_are_refused(tmp_path):
    src = _write(tmp_path / "a.csv", "id,name\nA1,x\nA2,y\n")
    scores = _scores(["A1", "A2"]).reset_index(drop=True)  # positions, not ids
    with pytest.raises(
        ValueError, match=r"none of the 2 scored ids is an account id .*index scores by account id"
    ):
        write_scored(src, tmp_path / "out.csv", scores)
    assert not (tmp_path / "out.csv").exists()
    assert _leftovers(tmp_path) == []


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_failed_replace_leaves_the_previous_output_and_no_temp_file(tmp_path, monkeypatch):
    src = _write(tmp_path / "a.csv", "id,name\nA1,x\n")
    out = _write(tmp_path / "out.csv", "previous run\n")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_scored(src, out, _scores(["A1"]))
    assert out.read_text() == "previous run\n"
    assert _leftovers(tmp_path) == []


def test_a_crash_mid_write_leaves_the_previous_output(tmp_path, monkeypatch):
    src = _write(tmp_path / "a.csv", "id,name\n" + "".join(f"A{i},n{i}\n" for i in range(10)))
    out = _write(tmp_path / "out.csv", "previous run\n")
    calls = []

    def crash_on_third(real):
        def then_crash(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 3:  # header and one chunk are already in the temporary file
                raise KeyboardInterrupt
            return real(self, *args, **kwargs)

        return then_crash

    # The header is joined by `text`, rows copied line by line by `data` (parsed rows by `text`).
    for method in ("text", "data"):
        monkeypatch.setattr(csvfile._CsvRows, method, crash_on_third(getattr(csvfile._CsvRows, method)))
    with pytest.raises(KeyboardInterrupt):
        write_scored(src, out, _scores([f"A{i}" for i in range(10)]), chunksize=4)
    assert len(calls) == 3
    assert out.read_text() == "previous run\n"
    assert _leftovers(tmp_path) == []


def test_write_scored_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    src = _write(tmp_path / "a.csv", "id\nA1\n")
    out = _write(tmp_path / "out.csv", "old\n")
    out.chmod(0o640)
    write_scored(src, out, _scores(["A1"]))
    assert out.stat().st_mode & 0o777 == 0o640


# The guard and the writer as first written (regex per cell, `DataFrame.to_csv`): what the columnar writer
# must reproduce byte for byte.
def _reference_guard(cells: pd.Series) -> pd.Series:
    s = cells.astype("string")
    risky = s.str.contains(r"^[=+\-@\t\r\x00]", regex=True).fillna(False) & ~s.str.fullmatch(
        r"^-(?:(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)?$"
    ).fillna(False)
    return s.mask(risky.astype(bool), "'" + s)


_CELLS = st.text(alphabet=st.sampled_from(list("=+-@\t\r\n\x00,;\"' a1.éE")), max_size=6) | st.none()


@settings(max_examples=300)
@given(
    rows=st.lists(st.lists(_CELLS, min_size=3, max_size=3), max_size=6),
    width=st.integers(1, 3),
    sep=st.sampled_from([",", ";", "\t"]),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_columnar_writer_and_guard_equal_to_csv_with_the_regex_guard(rows, width, sep, newline):
    frame = pd.DataFrame([r[:width] for r in rows], columns=[f"c{i}" for i in range(width)], dtype="string")
    expected = frame.apply(_reference_guard).to_csv(
        index=False, header=False, sep=sep, lineterminator=newline
    )
    writer = csvfile._CsvRows(sep, newline)
    cells = [frame[c].to_numpy(dtype=object, na_value=None).tolist() for c in frame.columns]
    assert writer.text([writer.encode(c) for c in cells]) == expected
    for column in frame.columns:
        pd.testing.assert_series_equal(
            csvfile.neutralize_formulas(frame[column]), _reference_guard(frame[column])
        )


def _parse_every_row(*args, **kwargs):
    raise csvfile._NotPlain


_LINE_CELLS = st.text(alphabet=st.sampled_from(list("=+-@\t\r\n\x00,;\"' a1.éŁ")), max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["A1", "A2", " A3", "A4", "A9", "-1", '"A2"']),
            st.lists(_LINE_CELLS, max_size=4),
        ),
        max_size=8,
    ),
    sep=st.sampled_from([",", ";", "\t"]),
    newline=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
    chunksize=st.integers(1, 4),
)
def test_copying_lines_writes_what_parsing_every_row_writes(
    rows, sep, newline, bom, chunksize, tmp_path_factory
):
    # Lines are written raw, quotes and all, so some are odd on purpose: short, long, quoted across lines.
    lines = [sep.join([i, *cells]) for i, cells in rows]
    text = sep.join(["id", "name", "x"]) + newline + "".join(line + newline for line in lines)
    directory = tmp_path_factory.mktemp("lines")
    src = _write(directory / "a.csv", text, encoding="utf-8-sig" if bom else "utf-8")
    scores = _scores(["A2", "A1", "A3", "A4"], icp_reasons=["+ a", "b, c", 'say "x"', "=1"])

    def written(parse_every_row: bool) -> bytes | str:
        real = csvfile._write_lines
        if parse_every_row:
            csvfile._write_lines = _parse_every_row
        try:
            out = directory / f"out-{parse_every_row}.csv"
            n = write_scored(src, out, scores, chunksize=chunksize)
            return out.read_bytes() + f"|{n}".encode()
        except (BookError, ValueError, AttributeError) as e:
            return f"{type(e).__name__}: {e}"
        finally:
            csvfile._write_lines = real

    assert written(parse_every_row=False) == written(parse_every_row=True)


@settings(max_examples=100)
@given(rows=st.lists(st.lists(_CELLS, min_size=2, max_size=2), max_size=5))
def test_write_frame_writes_what_to_csv_wrote(rows, tmp_path_factory):
    frame = pd.DataFrame(rows, columns=["=head", "b"], dtype="object")
    frame["n"] = [1.5 * i for i in range(len(frame))]
    path = tmp_path_factory.mktemp("frame") / "f.csv"
    csvfile.write_frame(frame, path)
    with path.open(newline="") as f:
        written = f.read()
    assert written == frame.astype("string").apply(_reference_guard).to_csv(index=False)
