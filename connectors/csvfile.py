"""The CSV connector: a book is an accounts file plus an optional deals file, as a CRM report export writes them.

`read_book` maps the files' own headers onto the canonical schema (`connectors.schema`) using the
`[csv.accounts.columns]`, `[csv.deals.columns]` and `[csv.deals.stages]` tables of the config, and returns
canonical frames for `scoring/` plus a `ParseReport` for the run summary. `write_scored` is the write-back: the
original accounts file with the ICP columns appended. Anything a person must fix raises `BookError`, whose
message names the file, the config key or row, and what is allowed.

Reading rules worth knowing:

* pandas parses the CSV (all cells as text, nothing turned into NaN by pandas, `utf-8-sig` so an Excel BOM is
  dropped). A header of one cell holding `;` or tabs is re-read with that separator. Excel writes `;` in
  locales whose decimal mark is a comma, so numbers in a `;` file default to a decimal comma when their
  column does not settle it (see `connectors.schema`).
* Header names match after trimming spaces, and case-insensitively when that is unambiguous.
* An unmapped canonical column whose header is literally its canonical name (`id`, `domain`, ...) is taken as
  is; `name` falls back to the id column; any other unmapped canonical column is all-missing. A mapping key that
  is not canonical is an extra attribute, kept as a stripped string under that key.
* Rows are numbered as a spreadsheet shows them: the header is row 1. Completely blank rows are skipped.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from connectors.schema import (
    ACCOUNT_SCHEMA,
    DEAL_SCHEMA,
    Decimal,
    Kind,
    ParseReport,
    conform,
)

ACCOUNTS_SECTION = "[csv.accounts.columns]"
DEALS_SECTION = "[csv.deals.columns]"
STAGES_SECTION = "[csv.deals.stages]"

#: Columns `write_scored` appends, in this order (docs/architecture.md, "Owned fields"; HubSpot-style names).
SCORE_COLUMNS: tuple[str, ...] = (
    "icp_segment",
    "icp_fit_score",
    "icp_tier",
    "icp_reasons",
    "icp_scored_at",
    "icp_model",
)

_READ_OPTIONS: dict[str, Any] = {
    "dtype": str,
    "keep_default_na": False,
    "na_filter": False,  # every cell stays the text it was; the schema parsers decide what is missing
    "encoding": "utf-8-sig",  # drops the BOM Excel puts in front of "CSV UTF-8" files
    "index_col": False,  # never turn a first column into the index when a row has an extra field
    "skip_blank_lines": False,  # keep blank lines so index + 2 stays the spreadsheet row number
}
_CHUNK_ROWS = 200_000  # rows per read: bounds the memory of the unmapped columns
_MAX_LISTED = 10  # ids/rows named in one error message
_MAX_HEADERS_LISTED = 40

# A cell a spreadsheet would evaluate: OWASP's =, +, -, @, tab and carriage return, plus NUL (OWASP ASVS).
_FORMULA_START = "=+-@\t\r\x00"
_FORMULA_CODES = np.array([0, *map(ord, _FORMULA_START)], dtype=np.uint32)  # 0: "" or NUL, told apart later
# ... except a plain negative number: prefixing "-12.5" with a quote would turn a number into text in every
# spreadsheet and break sums, and a bare number cannot call anything. A lone "-" (an export's "no value") is
# text to every spreadsheet, so it is kept too. "+1" is not exempt: it is rare as data and "+" starts DDE
# payloads ("+cmd|...").
_PLAIN_NEGATIVE_RE = re.compile(r"^-(?:(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)?$")


class BookError(Exception):
    """A CSV book that cannot be read or written as configured; the message says what to change.

    `problems` holds one line per problem (the message lists them all), `path` the file concerned.
    """

    def __init__(self, message: str, *, path: Path | None = None, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.path = path
        self.problems = tuple(problems) or (message,)


@dataclass(frozen=True)
class CsvBook:
    """A parsed book: canonical accounts, canonical deals (None without a deals file), and what was skipped.

    Deals whose account id is not in the accounts file are already left out of `deals` (and counted in
    `report.orphan_deals`), so aggregates never credit an account that is not in the book.
    """

    accounts: pd.DataFrame
    deals: pd.DataFrame | None
    report: ParseReport


# ---------------------------------------------------------------------------------------------------------
# Public API


def read_accounts(
    path: str | os.PathLike[str], columns: Mapping[str, str], *, decimal: Decimal = "auto"
) -> tuple[pd.DataFrame, ParseReport]:
    """Read an accounts CSV into the canonical account frame (one row per account, RangeIndex)."""
    accounts, report, _ = _read_accounts(path, columns, decimal)
    return accounts, report


def _read_accounts(
    path: str | os.PathLike[str], columns: Mapping[str, str], decimal: Decimal
) -> tuple[pd.DataFrame, ParseReport, pd.Index]:
    """`read_accounts`, plus the account ids as an object index: hashed once, looked up by parents and deals."""
    layout = _inspect(path, "accounts")
    mapping = _resolve(layout, columns, section=ACCOUNTS_SECTION, schema=ACCOUNT_SCHEMA, required=("id",))
    accounts, report, rows = _conform(
        *_read_mapped(layout, mapping), ACCOUNT_SCHEMA, "accounts", layout, decimal
    )
    if accounts.empty:
        raise _no_rows(layout, "account")
    ids = _check_ids(accounts["id"], rows, layout, mapping["id"], "account")  # unique, none blank
    parent = accounts["parent_id"]
    named = np.flatnonzero(parent.notna().to_numpy(dtype=bool))
    unknown = named[ids.get_indexer(parent.to_numpy(dtype=object)[named]) < 0]
    report.unknown_parents.add(rows.iloc[unknown], parent.iloc[unknown])
    return accounts, report, ids


def iter_accounts(
    path: str | os.PathLike[str],
    columns: Mapping[str, str],
    chunksize: int = 100_000,
    *,
    decimal: Decimal = "auto",
) -> Iterator[tuple[pd.DataFrame, ParseReport]]:
    """Yield the canonical account frame chunk by chunk, each with its own report (`ParseReport.merge` them).

    Memory stays bounded by `chunksize` rows, except for the set of ids seen so far, which is how duplicate
    ids across chunks are caught (a `BookError`, raised when the second copy is reached). Parent ids are not
    checked here (that needs the whole book), and with `decimal="auto"` each chunk votes on its own decimal
    convention, so pin `decimal` when the file's locale is known.
    """
    if chunksize < 1:
        raise ValueError("chunksize must be at least 1")
    layout = _inspect(path, "accounts")
    mapping = _resolve(layout, columns, section=ACCOUNTS_SECTION, schema=ACCOUNT_SCHEMA, required=("id",))
    seen: dict[str, int] = {}
    any_rows = False
    for chunk in _chunks(layout, chunksize):
        accounts, report, rows = _conform(
            *_named(chunk, mapping, layout), ACCOUNT_SCHEMA, "accounts", layout, decimal
        )
        if accounts.empty:
            continue
        _check_ids(accounts["id"], rows, layout, mapping["id"], "account", seen=seen)
        any_rows = True
        yield accounts, report
    if not any_rows:
        raise _no_rows(layout, "account")


def read_deals(
    path: str | os.PathLike[str],
    columns: Mapping[str, str],
    stages: Mapping[str, Sequence[str]],
    *,
    decimal: Decimal = "auto",
) -> tuple[pd.DataFrame, ParseReport]:
    """Read a deals CSV into the canonical deal frame; `stages` = {"won": [...], "lost": [...]}.

    Stage names match case-insensitively; a stage in neither list is an open deal, and each such stage is
    counted in `report.unknown_stages` so a typo in the config shows up in the run summary.
    """
    deals, report, _ = _read_deals(path, columns, stages, decimal)
    return deals, report


def read_book(
    accounts_path: str | os.PathLike[str],
    deals_path: str | os.PathLike[str] | None,
    account_columns: Mapping[str, str],
    deal_columns: Mapping[str, str] | None = None,
    stages: Mapping[str, Sequence[str]] | None = None,
    *,
    decimal: Decimal = "auto",
) -> CsvBook:
    """Read accounts and (optionally) deals; every configuration problem of both files is reported at once."""
    problems: list[BookError] = []
    try:
        acc_layout = _inspect(accounts_path, "accounts")
        _resolve(
            acc_layout, account_columns, section=ACCOUNTS_SECTION, schema=ACCOUNT_SCHEMA, required=("id",)
        )
    except BookError as e:
        problems.append(e)
    if deals_path is not None:
        try:
            if deal_columns is None or stages is None:
                raise BookError(
                    f"{deals_path}: a deals file needs {DEALS_SECTION} (account_id and stage at least) and "
                    f"{STAGES_SECTION} (won = [...], lost = [...])",
                    path=Path(deals_path),
                )
            _check_deals_config(Path(deals_path), deal_columns, stages)
        except BookError as e:
            problems.append(e)
    if problems:
        raise BookError(
            "\n".join(str(e) for e in problems),
            path=problems[0].path,
            problems=[p for e in problems for p in e.problems],
        )

    accounts, report, ids = _read_accounts(accounts_path, account_columns, decimal)
    if deals_path is None:
        return CsvBook(accounts=accounts, deals=None, report=report)
    assert deal_columns is not None and stages is not None  # checked above
    deals, deal_report, deal_rows = _read_deals(deals_path, deal_columns, stages, decimal)
    report.merge(deal_report)
    orphan = ids.get_indexer(deals["account_id"].to_numpy(dtype=object)) < 0
    report.orphan_deals.add(deal_rows[orphan], deals["account_id"][orphan])
    deals = deals[~orphan].reset_index(drop=True)
    return CsvBook(accounts=accounts, deals=deals, report=report)


def write_scored(
    accounts_path_in: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    scores: pd.DataFrame,
    *,
    columns: Mapping[str, str] | None = None,
    chunksize: int = 100_000,
) -> int:
    """Write the original accounts file with the ICP columns appended; returns how many rows got a score.

    `scores` is indexed by account id and holds `SCORE_COLUMNS`. `columns` is the same mapping as for
    `read_accounts` (only its `id` entry matters; without it the file needs an `id` header). Every original
    column, row and cell text is kept in order (quoting may differ, and blank lines above the header are
    dropped), except that cells a spreadsheet would run as a formula are
    prefixed with `'` (plain negative numbers such as `-12.5` are left alone). ICP columns already in the file
    (a rescored output) are overwritten in place instead of duplicated. Rows with no score get empty ICP cells.
    The file is written to a temporary file beside `out_path` and moved over it in one step, so readers see
    the old file or the new one, never half of one; a BOM and CRLF line ends are kept if the input had them.
    """
    if chunksize < 1:
        raise ValueError("chunksize must be at least 1")
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lacks column(s) {', '.join(missing)}; it needs {', '.join(SCORE_COLUMNS)}")
    # An object index of plain str: hashing them is about twice as fast as through a string dtype.
    score_ids = pd.Index(_stripped_ids(scores.index), dtype=object, name="id")
    if score_ids.has_duplicates:
        dupes = score_ids[score_ids.duplicated()].unique()[:_MAX_LISTED]
        raise ValueError(f"scores has more than one row for account id(s) {', '.join(map(str, dupes))}")

    layout = _inspect(accounts_path_in, "accounts")
    id_pos = _resolve(
        layout, columns or {}, section=ACCOUNTS_SECTION, schema=ACCOUNT_SCHEMA, required=("id",)
    )["id"]
    stripped = [h.strip() for h in layout.headers]
    # Reuse ICP columns already in the file so rescoring an output does not stack a second set.
    targets = {}
    width = len(layout.headers)
    for c in SCORE_COLUMNS:
        if c in stripped:
            targets[c] = stripped.index(c)
        else:
            targets[c] = width
            width += 1
    header = list(layout.headers) + [c for c in SCORE_COLUMNS if targets[c] >= len(layout.headers)]

    rows = _CsvRows(layout.sep, layout.newline)
    cells = _ScoreCells(scores, score_ids, rows)
    scored = 0
    with atomic_text_file(out_path, "utf-8-sig" if layout.bom else "utf-8") as f:
        f.write(rows.text([rows.encode([h]) for h in header]))
        f.flush()  # rows go to the binary buffer below the text layer, after the header (and BOM)
        start = f.buffer.tell()
        try:
            # Most lines of an export are written back as they are: copied, the score cells appended.
            if width != len(layout.headers) + len(SCORE_COLUMNS):
                raise _NotPlain  # ICP columns already in the file are overwritten in place: parse it
            scored = _write_lines(f.buffer, layout, id_pos, rows, cells, chunksize)
        except _NotPlain:
            f.buffer.seek(start)
            f.buffer.truncate()
            scored = _write_parsed(f.buffer, layout, id_pos, rows, cells, targets, width, chunksize)
        if scored == 0 and len(score_ids):
            # Scores indexed by position instead of account id would otherwise write an unscored copy.
            raise ValueError(
                f"none of the {len(score_ids)} scored ids is an account id in {layout.path} (column "
                f"{_quoted(layout.headers[id_pos].strip())}); index scores by account id"
            )
    return scored


class _ScoreCells:
    """The score cells of each account as written: each distinct value turned into text, guarded and quoted
    once (a few thousand distinct reasons in a million rows), then taken by the row's position in `scores`,
    where position -1 (an id with no score) takes empty cells."""

    def __init__(self, scores: pd.DataFrame, score_ids: pd.Index, rows: _CsvRows) -> None:
        self.ids = score_ids
        # The file's ids usually come in the order scored: a chunk is then checked, not looked up.
        plain = pd.api.types.infer_dtype(score_ids, skipna=False) == "string"
        self.in_order = score_ids.to_numpy(dtype=object) if plain else None
        self.next = 0
        self.codes, self.texts = [], []
        for c in SCORE_COLUMNS:
            codes, uniques = pd.factorize(scores[c])  # NA gets code -1, whose text is the last ""
            text = rows.encode(_cell_text(pd.Series(uniques, dtype=scores[c].dtype)).tolist()) + [""]
            self.codes.append(np.append(codes, -1))  # position -1: no score, the last ""
            self.texts.append(np.array(text, dtype=object))
        self._row_codes: np.ndarray | None = None
        self._suffixes: list[bytes] = []
        self.rows = rows

    def positions(self, ids: list[str]) -> np.ndarray:
        """Each id's row in `scores`, -1 where it has none."""
        n, at = len(ids), self.next
        order = self.in_order
        if (
            order is not None
            and at + n <= len(order)
            and (order[at : at + n] == np.array(ids, dtype=object)).all()
        ):
            self.next = at + n
            return np.arange(at, at + n)
        pos = self.ids.get_indexer(ids)
        if n and pos[-1] >= 0:
            self.next = int(pos[-1]) + 1
        return pos

    def columns(self, pos: np.ndarray) -> list[list[str]]:
        """The score columns of these rows, as text."""
        return [text[codes[pos]].tolist() for codes, text in zip(self.codes, self.texts, strict=True)]

    def suffixes(self, pos: np.ndarray) -> list[bytes]:
        """Each row's tail as UTF-8: the separator, the score cells joined, the newline.

        Rows share few distinct tails (the reasons decide), so each distinct tail is built once.
        """
        if self._row_codes is None:
            # One integer per combination of the columns' codes (+1: code -1 is a value too), kept small by
            # factorising as it grows; each distinct tail is then built from its first row.
            key = np.zeros(len(self.codes[0]), dtype=np.int64)
            for codes, text in zip(self.codes, self.texts, strict=True):
                key = key * (len(text) + 1) + (codes + 1)
                key, uniques = pd.factorize(key)
                key = key.astype(np.int64)
            first = np.empty(len(uniques), dtype=np.int64)
            first[key[::-1]] = np.arange(len(key) - 1, -1, -1)
            sep, newline = self.rows.sep, self.rows.newline
            columns = [
                text[codes[first]].tolist() for codes, text in zip(self.codes, self.texts, strict=True)
            ]
            tails = zip(*columns, strict=True)
            self._suffixes = [(sep + sep.join(tail) + newline).encode("utf-8") for tail in tails]
            self._row_codes = key
        return [self._suffixes[i] for i in self._row_codes[pos].tolist()]


class _NotPlain(Exception):
    """The accounts file is not one `_write_lines` can copy line by line; `_write_parsed` writes it."""


def _write_parsed(
    out: io.BufferedIOBase,
    layout: _Layout,
    id_pos: int,
    rows: _CsvRows,
    cells: _ScoreCells,
    targets: Mapping[str, int],
    width: int,
    chunksize: int,
) -> int:
    """Every row parsed, each cell guarded and quoted as the `csv` module would, the score cells set in place."""
    scored = 0
    for chunk in _chunks(layout, chunksize):
        columns = [rows.encode(_cell_list(chunk.iloc[:, i])) for i in range(chunk.shape[1])]
        pos = cells.positions([x.strip() for x in _cell_list(chunk.iloc[:, id_pos])])
        scored += int((pos >= 0).sum())
        columns.extend([[]] * (width - len(columns)))
        for c, score_column in zip(SCORE_COLUMNS, cells.columns(pos), strict=True):
            columns[targets[c]] = score_column
        out.write(rows.text(columns).encode("utf-8"))
    return scored


_BLOCK_BYTES = 1 << 24  # bytes read at a time by `_write_lines`


def _write_lines(
    out: io.BufferedIOBase, layout: _Layout, id_pos: int, rows: _CsvRows, cells: _ScoreCells, chunksize: int
) -> int:
    """The rows with the score cells appended, each line whose text `_write_parsed` would write unchanged
    copied byte for byte; raises `_NotPlain` (maybe after writing some rows) for a file it cannot copy.

    Such a line has every field, no quote, no cell a spreadsheet would run and no line-end character other
    than its newline, so parsing and re-quoting would give back its own text (the `csv` module quotes only
    cells holding the separator, a quote or a line end). Every other line is parsed by pandas, with the
    header above it, exactly as `_write_parsed` parses it; if pandas then does not find one row per such
    line (a quoted field across lines) or refuses one, the whole file goes to `_write_parsed`.
    """
    sep, newline = layout.sep, layout.newline
    extra = set(rows.special) - {sep, '"', "\r", "\n"}
    if layout.skip or len(sep) != 1 or not sep.isascii() or not all(ch.isascii() for ch in extra):
        raise _NotPlain
    b_sep, b_nl = sep.encode(), newline.encode()
    fields = len(layout.headers)
    formula = np.zeros(256, dtype=bool)
    formula[[ord(ch) for ch in _FORMULA_START if ch not in ("\r", "\x00", sep)]] = True
    unsafe = ('"' + "".join(extra)).encode()  # besides "\r" and NUL, which send the file to _write_parsed
    scored = 0
    pending: list[bytes] = []
    pending_ids: list[str] = []
    with layout.path.open("rb") as f, _writes_behind(out) as write:
        head = f.readline()
        header_line = head[3:] if layout.bom else head
        if (
            not header_line.endswith(b_nl)
            or header_line.count(b"\r") != len(b_nl) - 1
            or b'"' in header_line
            or header_line.count(b_sep) != fields - 1
        ):
            raise _NotPlain
        for block in _line_blocks(f, b_nl):
            crlf = block.count(b"\r\n") if newline == "\r\n" else 0
            if b"\x00" in block or block.count(b"\r") != crlf or (crlf and block.count(b"\n") != crlf):
                raise _NotPlain
            try:
                block.decode("utf-8")  # what pandas would refuse, _write_parsed reports
            except UnicodeDecodeError:
                raise _NotPlain from None
            lines = block.split(b_nl)
            lines.pop()  # the empty text after the last newline
            odd = _odd_lines(block, b_sep, fields, formula, unsafe)
            if id_pos == 0:
                raw_ids = [x.partition(b_sep)[0] for x in lines]
            else:
                raw_ids = [
                    x.split(b_sep, id_pos + 1)[id_pos] if x.count(b_sep) >= id_pos else b"" for x in lines
                ]
            ids = [x.strip() for x in b"\n".join(raw_ids).decode("utf-8").split("\n")]
            if len(odd):
                _parse_odd_lines(lines, ids, odd, header_line, layout, id_pos, rows)
            pending += lines
            pending_ids += ids
            while len(pending) >= chunksize:
                scored += _append_scores(write, pending[:chunksize], pending_ids[:chunksize], rows, cells)
                del pending[:chunksize], pending_ids[:chunksize]
        if pending:
            scored += _append_scores(write, pending, pending_ids, rows, cells)
    return scored


def _line_blocks(f: io.BufferedIOBase, newline: bytes) -> Iterator[bytes]:
    """The rest of the file in blocks of whole lines, each ending with a newline (one is added at the end)."""
    rest = b""
    while True:
        data = f.read(_BLOCK_BYTES)
        if not data:
            break
        data = rest + data
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield data[:cut]
    if rest:
        yield rest + newline


def _odd_lines(block: bytes, sep: bytes, fields: int, formula: np.ndarray, unsafe: bytes) -> np.ndarray:
    """The lines of a block that cannot be copied as they are: a byte of `unsafe` (a quote), other than
    `fields` fields, or a cell whose first byte is in the `formula` table (as `_guard` looks at it)."""
    a = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(a == ord("\n"))
    seps = np.flatnonzero(a == sep[0])
    odd = np.diff(np.searchsorted(seps, ends), prepend=0) != fields - 1
    # A cell starts at a line start or after a separator (never past the block, which ends with a newline).
    starts = np.concatenate(([0], ends[:-1] + 1, seps + 1))
    risky = [starts[formula[a[starts]]]]
    risky += [np.flatnonzero(a == code) for code in unsafe]
    odd[np.searchsorted(ends, np.concatenate(risky))] = True
    return np.flatnonzero(odd)


def _parse_odd_lines(
    lines: list[bytes],
    ids: list[str],
    odd: np.ndarray,
    header_line: bytes,
    layout: _Layout,
    id_pos: int,
    rows: _CsvRows,
) -> None:
    """Replace the odd lines by their text as `_write_parsed` writes it, and their ids by the parsed ids."""
    at = odd.tolist()
    text = header_line + b"".join(lines[i] + b"\n" for i in at)
    try:
        with _translated(layout):
            chunk = pd.read_csv(io.BytesIO(text), sep=layout.sep, **{**_READ_OPTIONS, "dtype": object})
    except BookError:
        raise _NotPlain from None
    if len(chunk) != len(at) or chunk.shape[1] != len(layout.headers):
        raise _NotPlain  # a quoted field spans lines, or a blank line was dropped
    columns = [rows.encode(_cell_list(chunk.iloc[:, i])) for i in range(chunk.shape[1])]
    parsed_ids = [x.strip() for x in _cell_list(chunk.iloc[:, id_pos])]
    sep = rows.sep
    for i, line, id_ in zip(at, zip(*columns, strict=True), parsed_ids, strict=True):
        lines[i] = sep.join(line).encode("utf-8")
        ids[i] = id_


def _append_scores(
    write: Callable[[bytes], object], lines: list[bytes], ids: list[str], rows: _CsvRows, cells: _ScoreCells
) -> int:
    pos = cells.positions(ids)
    write(rows.data(lines, cells.suffixes(pos)))
    return int((pos >= 0).sum())


@contextlib.contextmanager
def _writes_behind(out: io.BufferedIOBase) -> Iterator[Callable[[bytes], None]]:
    """A `write` that returns at once: one thread writes a chunk (the system call releases the GIL) while the
    next is built. At most one write is in flight, a failed one raises at the next write or at the end, and
    leaving, even by an error, waits for the write in flight."""
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="icp-csv-write") as pool:

        def write(data: bytes) -> None:
            if pending:
                pending.pop().result()
            pending.append(pool.submit(out.write, data))

        yield write
        if pending:
            pending.pop().result()


def write_frame(frame: pd.DataFrame, out_path: str | os.PathLike[str]) -> Path:
    """Write a frame as UTF-8 CSV, formula cells neutralised, atomically (temp file, then one rename).

    The text is what `frame.astype("string").to_csv(path, index=False)` writes (missing cells empty), with the
    formula guard on the cells, not the header.
    """
    text = frame.astype("string")
    with atomic_text_file(out_path) as f:
        if isinstance(text.columns, pd.MultiIndex) or text.shape[1] == 0:
            _neutralize(text).to_csv(f, index=False)
        else:
            rows = _CsvRows(",", os.linesep)
            header = ["" if c is None else str(c) for c in text.columns]
            f.write(rows.text([rows.encode([h], guard=False) for h in header]))
            for start in range(0, len(text), _CHUNK_ROWS):
                part = text.iloc[start : start + _CHUNK_ROWS]
                f.write(rows.text([rows.encode(_cell_list(part.iloc[:, i])) for i in range(part.shape[1])]))
    return Path(out_path)


@contextlib.contextmanager
def atomic_text_file(out_path: str | os.PathLike[str], encoding: str = "utf-8"):
    """A text file written beside `out_path` and moved over it in one step once complete, so readers see
    the old file or the new one, never half of one; on any error the temporary file is removed."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes a 0600 file: keep the mode of the file we replace, else the usual rw-r--r--.
        os.chmod(tmp_name, out.stat().st_mode & 0o7777 if out.exists() else 0o644)
        os.replace(tmp_name, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def neutralize_formulas(cells: pd.Series) -> pd.Series:
    """Prefix `'` to every cell a spreadsheet would run as a formula; plain negative numbers are kept."""
    s = cells.astype("string")
    missing = s.isna().to_numpy(dtype=bool)
    guarded = _guard(s.to_numpy(dtype=object, na_value=""))
    return pd.Series(pd.array(guarded, dtype=s.dtype), index=s.index, name=s.name).mask(missing)


def _guard(cells: np.ndarray) -> np.ndarray:
    """The formula guard over an object array of str (no missing values): a new array where cells change.

    Only the first character decides, so numpy compares code points (a `U1` cast keeps the first character,
    as 0 for "" and for NUL alike); Python looks only at the few cells that start like a formula.
    """
    if not len(cells):
        return cells
    first = cells.astype("U1").view(np.uint32)
    candidates = np.flatnonzero(np.isin(first, _FORMULA_CODES))
    if not len(candidates):
        return cells
    out = cells.copy()
    out[candidates] = [
        "'" + x if x and not (x[0] == "-" and _PLAIN_NEGATIVE_RE.fullmatch(x)) else x
        for x in cells[candidates].tolist()
    ]
    return out


def _cell_list(column: pd.Series) -> list[str]:
    """A column of text cells as a list of str (missing cells, from short rows, are left to `_CsvRows.encode`)."""
    return column.to_numpy(dtype=object).tolist()


def _stripped_ids(ids: pd.Index) -> np.ndarray:
    """Score ids as text without surrounding spaces, as an object array (NA stays NA)."""
    values = ids.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        return np.array([v.strip() for v in values], dtype=object)
    return ids.astype("string").str.strip().to_numpy(dtype=object)


class _CsvRows:
    """Rows of text cells as the `csv` module writes them with `QUOTE_MINIMAL` (and so `DataFrame.to_csv`),
    built a column at a time: `encode` guards and quotes a column's cells, `text` joins columns into lines.

    Which characters need quoting is asked of the `csv` module itself, so the text matches it byte for byte
    whatever the Python version.
    """

    def __init__(self, sep: str, newline: str) -> None:
        self.sep, self.newline = sep, newline
        probe = io.StringIO()
        writer = csv.writer(probe, delimiter=sep, lineterminator=newline, quoting=csv.QUOTE_MINIMAL)
        suspects = sorted({sep, '"', "\r", "\n", "\t", " ", "'", ",", ";", "\x00", *newline})
        for ch in suspects:
            writer.writerow([f"a{ch}b", "c"])
        self.special = [ch for ch in suspects if f'"a{ch}' in probe.getvalue()]
        self.needs_quotes = re.compile("[" + re.escape("".join(self.special)) + "]")

    def encode(self, cells: list[str], *, guard: bool = True) -> list[str]:
        """Each cell as written: through the formula guard (unless `guard=False`), then quoted if needed.

        A column none of whose cells holds a formula start or a character that needs quoting (most of them:
        ids, numbers, dates, countries) costs one join and a few substring searches.
        """
        try:
            joined = "".join(cells)
        except TypeError:  # missing cells (NaN, None, NA): written empty, as `to_csv` writes them
            cells = [v if isinstance(v, str) else "" for v in cells]
            joined = "".join(cells)
        if guard and any(ch in joined for ch in _FORMULA_START):
            cells = _guard(np.array(cells, dtype=object)).tolist()
        if any(ch in joined for ch in self.special):
            search = self.needs_quotes.search
            cells = ['"' + x.replace('"', '""') + '"' if search(x) else x for x in cells]
        return cells

    def data(self, lines: list[bytes], tails: list[bytes]) -> bytes:
        """Rows already encoded as UTF-8: each line followed by its tail, which ends with the newline."""
        return b"".join(chain.from_iterable(zip(lines, tails, strict=True)))

    def text(self, columns: Sequence[list[str]]) -> str:
        """The lines for these encoded columns (lists of equal length), each line ending with the newline."""
        if not columns or not len(columns[0]):
            return ""
        if len(columns) == 1:  # a row of one empty field is written "" so that it is not a blank line
            return "".join((x or '""') + self.newline for x in columns[0])
        return self.newline.join(map(self.sep.join, zip(*columns, strict=True))) + self.newline


# ---------------------------------------------------------------------------------------------------------
# File layout and pandas error translation


@dataclass(frozen=True)
class _Layout:
    """What the first bytes and the header row of a file tell us."""

    path: Path
    what: str  # "accounts" or "deals", for messages
    headers: list[str]  # the header row exactly as written (pandas would rename duplicates)
    sep: str
    bom: bool
    newline: str
    skip: int = 0  # blank lines above the header

    @property
    def decimal_hint(self) -> Literal[".", ","]:
        # Excel separates with ";" exactly in the locales whose decimal mark is ",".
        return "," if self.sep == ";" else "."


def _inspect(path: str | os.PathLike[str], what: str) -> _Layout:
    p = Path(path)
    if not p.exists():
        raise BookError(
            f"{p}: no such file; the {what} CSV must exist (check its path in your config)", path=p
        )
    if not p.is_file():
        raise BookError(f"{p}: is a directory, not a CSV file; point the {what} path at the file", path=p)
    with p.open("rb") as f:
        head = f.read(65536)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\xd0\xcf\x11\xe0"):
        raise BookError(
            f"{p}: is an Excel workbook, not a CSV file; in Excel use File > Save As > "
            f'"CSV UTF-8 (Comma delimited)"',
            path=p,
        )
    if b"\x00" in head:
        raise BookError(
            f"{p}: is a binary file, not a CSV file (or UTF-16 text); save it as CSV UTF-8", path=p
        )
    if not head.strip(b"\xef\xbb\xbf \t\r\n"):
        raise BookError(
            f"{p}: is empty; expected a header row naming the columns, then one row per {what[:-1]}",
            path=p,
        )
    bom = head.startswith(b"\xef\xbb\xbf")
    # Blank lines above the header: pandas skips them for the header but not with skip_blank_lines=False.
    body = head[3:] if bom else head
    skip = body[: len(body) - len(body.lstrip(b" \t\r\n"))].count(b"\n")
    first_line_end = head.find(b"\n")
    newline = "\r\n" if first_line_end > 0 and head[first_line_end - 1 : first_line_end] == b"\r" else "\n"

    # Read the header with pandas, then again with ";" or tab if it came back as one cell holding them:
    # a European Excel "CSV" uses semicolons, and tab-separated exports exist too.
    sep = ","
    with _translated(_Layout(p, what, [], sep, bom, newline, skip)):
        cells = pd.read_csv(p, header=None, nrows=1, sep=sep, **_header_options()).iloc[0].tolist()
        if len(cells) == 1 and (";" in cells[0] or "\t" in cells[0]):
            sep = ";" if cells[0].count(";") >= cells[0].count("\t") else "\t"
            cells = pd.read_csv(p, header=None, nrows=1, sep=sep, **_header_options()).iloc[0].tolist()
    return _Layout(p, what, [str(c) for c in cells], sep, bom, newline, skip)


def _header_options() -> dict[str, Any]:
    options = dict(_READ_OPTIONS)
    del options["index_col"]
    options["skip_blank_lines"] = True
    return options


@contextlib.contextmanager
def _translated(layout: _Layout) -> Iterator[None]:
    """Turn pandas' reading failures into `BookError`s a person can act on."""
    p = layout.path
    try:
        with warnings.catch_warnings():
            # pandas only warns when the first data row has more fields than the header, then drops data.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            yield
    except pd.errors.ParserWarning:
        raise BookError(
            f"{p}: row {2 + layout.skip} has more fields than the header's {len(layout.headers)}; "
            f"a value containing {_sep_name(layout.sep)} must be in double quotes",
            path=p,
        ) from None
    except pd.errors.EmptyDataError:
        raise BookError(
            f"{p}: is empty; expected a header row naming the columns, then one row per {layout.what[:-1]}",
            path=p,
        ) from None
    except UnicodeDecodeError as e:
        bad = e.object[e.start : e.start + 1].hex().upper() if isinstance(e.object, bytes) else "?"
        raise BookError(
            f"{p}: is not UTF-8 text (found byte 0x{bad}); save it as CSV UTF-8, or convert it, "
            f"e.g. iconv -f WINDOWS-1252 -t UTF-8",
            path=p,
        ) from None
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if m:
            expected, line, saw = m.groups()
            raise BookError(
                f"{p}: line {line} has {saw} fields but the header has {expected}; "
                f"a value containing {_sep_name(layout.sep)} must be in double quotes",
                path=p,
            ) from None
        raise BookError(f"{p}: is not a readable CSV file ({e})", path=p) from None


def _sep_name(sep: str) -> str:
    return {",": "a comma", ";": "a semicolon", "\t": "a tab"}.get(sep, repr(sep))


def _chunks(layout: _Layout, chunksize: int = _CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The file's rows, every column as text (object columns of str; NaN for the missing fields of a short
    row), `chunksize` rows at a time.

    Every column is read even when few are mapped: with `usecols` pandas silently drops the extra fields of
    a row with an unquoted separator, and the shifted values would be read as data. Chunks keep memory to
    the mapped columns plus one chunk.
    """
    # The error translation wraps each read, not the yields, so a caller's exception is never rewritten.
    with _translated(layout):
        reader = pd.read_csv(
            layout.path,
            sep=layout.sep,
            skiprows=layout.skip,
            chunksize=chunksize,
            **{**_READ_OPTIONS, "dtype": object},  # plain str: no per-cell wrapping into a string dtype
        )
    with reader:
        while True:
            with _translated(layout):
                chunk = next(reader, None)
            if chunk is None:
                return
            yield chunk


def _no_rows(layout: _Layout, noun: str) -> BookError:
    return BookError(
        f"{layout.path}: has a header but no rows; expected one row per {noun} below the header",
        path=layout.path,
    )


# ---------------------------------------------------------------------------------------------------------
# Column mapping


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _header_list(headers: Sequence[str]) -> str:
    listed = ", ".join(_quoted(h) for h in headers[:_MAX_HEADERS_LISTED])
    more = len(headers) - _MAX_HEADERS_LISTED
    return listed + (f", ... and {more} more" if more > 0 else "")


def _column_letter(position: int) -> str:
    letters = ""
    n = position + 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(65 + r) + letters
    return letters


def _resolve(
    layout: _Layout,
    columns: Mapping[str, Any],
    *,
    section: str,
    schema: Mapping[str, Kind],
    required: Sequence[str],
    derived: Sequence[str] = (),
) -> dict[str, int]:
    """Map canonical/extra names to header positions, or raise one `BookError` listing every problem."""
    if not isinstance(columns, Mapping):
        raise BookError(f'{section} must be a table of name = "header" entries', path=layout.path)
    name = layout.path.name
    headers = [h.strip() for h in layout.headers]
    exact: dict[str, list[int]] = {}
    folded: dict[str, list[int]] = {}
    for i, h in enumerate(headers):
        exact.setdefault(h, []).append(i)
        folded.setdefault(h.casefold(), []).append(i)

    problems: list[str] = []
    resolved: dict[str, int] = {}
    for key, header in columns.items():
        if key in derived:
            problems.append(f"{section} {key}: is derived from {STAGES_SECTION}; remove it from {section}")
            continue
        if not isinstance(header, str) or not header.strip():
            problems.append(f"{section} {key} = {header!r}: must be a header of {name}, in quotes")
            continue
        want = header.strip()
        found = exact.get(want) or folded.get(want.casefold(), [])
        if not found:
            close = difflib.get_close_matches(want, headers, n=1, cutoff=0.6)
            hint = f" (did you mean {_quoted(close[0])}?)" if close else ""
            problems.append(
                f"{section} {key} = {_quoted(header)}: no such header in {name}{hint}; "
                f"headers are: {_header_list(headers)}"
            )
        elif len(found) > 1:
            where = ", ".join(_column_letter(i) for i in found)
            problems.append(
                f"{section} {key} = {_quoted(header)}: {name} has {len(found)} columns headed "
                f"{_quoted(headers[found[0]])} (columns {where}); rename all but one"
            )
        else:
            resolved[key] = found[0]

    # Unmapped canonical columns are taken from a header that is literally their name (exactly, once).
    for key in schema:
        if key not in columns and key not in derived and len(exact.get(key, [])) == 1:
            resolved[key] = exact[key][0]
    if "name" in schema and "name" not in resolved and "name" not in columns and "id" in resolved:
        resolved["name"] = resolved["id"]
    for key in required:
        if key not in resolved and key not in columns:
            problems.append(
                f"{section} {key} is required: map it to one of the headers: {_header_list(headers)}"
            )
    if problems:
        raise BookError(
            f"{layout.path}: {len(problems)} problem(s) with {section}:\n  " + "\n  ".join(problems),
            path=layout.path,
            problems=problems,
        )
    return resolved


# ---------------------------------------------------------------------------------------------------------
# Rows to canonical frames


def _named(
    chunk: pd.DataFrame, mapping: Mapping[str, int], layout: _Layout
) -> tuple[pd.DataFrame, pd.Series]:
    """The mapped columns under their canonical names, without blank rows, and each row's spreadsheet number."""
    keep = _not_blank(chunk)
    named = pd.DataFrame(
        {key: chunk.iloc[keep, pos] for key, pos in mapping.items()}, index=chunk.index[keep]
    )
    return named, pd.Series(named.index.to_numpy() + 2 + layout.skip, index=named.index)


def _not_blank(chunk: pd.DataFrame) -> np.ndarray:
    """Mask of the rows that are records: a blank line (or a row of empty cells) is not one, though its number
    still counts, as in a spreadsheet. Only rows whose first cell is empty can be blank, so only those are
    looked at whole."""
    keep = np.ones(len(chunk), dtype=bool)
    maybe = np.flatnonzero(chunk.iloc[:, 0].to_numpy(dtype=object) == "")
    if len(maybe):
        keep[maybe] = ~chunk.iloc[maybe].eq("").all(axis=1).to_numpy(dtype=bool)
    return keep


def _read_mapped(layout: _Layout, mapping: Mapping[str, int]) -> tuple[pd.DataFrame, pd.Series]:
    """`_named` over the whole file: the chunks' columns are joined column by column (joining the chunks'
    frames costs several times more)."""
    parts: dict[str, list[np.ndarray]] = {key: [] for key in mapping}
    kept: list[np.ndarray] = []
    for chunk in _chunks(layout):
        keep = _not_blank(chunk)
        everything = bool(keep.all())
        kept.append(chunk.index.to_numpy()[keep])
        for key, pos in mapping.items():
            column = chunk.iloc[:, pos].to_numpy(dtype=object)
            parts[key].append(column if everything else column[keep])
    if not kept:
        return pd.DataFrame({key: pd.Series(dtype="string") for key in mapping}), pd.Series(dtype="int64")
    index = pd.Index(np.concatenate(kept))
    named = pd.DataFrame(
        {key: pd.Series(np.concatenate(arrays), index=index, dtype=object) for key, arrays in parts.items()},
        index=index,
    )
    return named, pd.Series(index.to_numpy() + 2 + layout.skip, index=index)


def _conform(
    named: pd.DataFrame,
    rows: pd.Series,
    schema: Mapping[str, Kind],
    table: str,
    layout: _Layout,
    decimal: Decimal,
) -> tuple[pd.DataFrame, ParseReport, pd.Series]:
    """The canonical frame (RangeIndex), its report, and the spreadsheet row of each of its rows."""
    frame, report = conform(
        named, schema, table=table, rows=rows, decimal=decimal, fallback=layout.decimal_hint
    )
    return frame.reset_index(drop=True), report, rows.reset_index(drop=True)


def _check_ids(
    ids: pd.Series,
    rows: pd.Series,
    layout: _Layout,
    position: int,
    noun: str,
    *,
    seen: dict[str, int] | None = None,
    allow_blank: bool = False,
) -> pd.Index:
    """Raise a `BookError` for blank or repeated ids, naming them and their spreadsheet rows; else return the
    ids present as an object index (its hash table, built by the uniqueness check, serves later lookups)."""
    header = _quoted(layout.headers[position].strip())
    blank = ids.isna().to_numpy(dtype=bool)
    if blank.any() and not allow_blank:
        listed = rows[blank].head(_MAX_LISTED).astype(str).tolist()
        more = int(blank.sum()) - len(listed)
        raise BookError(
            f"{layout.path}: row(s) {', '.join(listed)}{f' and {more} more' if more > 0 else ''} have no "
            f"{noun} id in column {header}; every {noun} needs one",
            path=layout.path,
        )
    present = ids[~blank]
    index = pd.Index(present.to_numpy(dtype=object), dtype=object)
    if seen is None and index.is_unique:
        return index
    dup_mask = np.array(present.duplicated(keep=False), dtype=bool)
    earlier: dict[str, list[int]] = {}
    if seen is not None and not seen.keys().isdisjoint(present.tolist()):
        repeat = present.isin(seen.keys()).to_numpy(dtype=bool)
        earlier = {i: [seen[i]] for i in present[repeat].unique()}
        dup_mask |= repeat
    if dup_mask.any():
        dup_rows = pd.DataFrame({"id": present[dup_mask], "row": rows[~blank][dup_mask]})
        grouped = dup_rows.groupby("id", sort=False)["row"].apply(list)
        details = [
            f"{_quoted(str(i))} on rows {_and_list(earlier.get(i, []) + r)}"
            for i, r in grouped.head(_MAX_LISTED).items()
        ]
        more = len(grouped) - len(details)
        raise BookError(
            f"{layout.path}: duplicate {noun} ids in column {header} (each {noun} must appear once): "
            + "; ".join(details)
            + (f"; and {more} more" if more > 0 else ""),
            path=layout.path,
        )
    if seen is not None:
        seen.update(zip(present.tolist(), rows[~blank].tolist(), strict=True))
    return index


def _and_list(items: Sequence[Any]) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ---------------------------------------------------------------------------------------------------------
# Deals


def _stage_sets(stages: Any) -> tuple[set[str], set[str], list[str]]:
    """The case-folded won and lost stage names, and any problems with `[csv.deals.stages]`."""
    problems: list[str] = []
    if not isinstance(stages, Mapping):
        return set(), set(), [f'{STAGES_SECTION} must be a table: won = ["..."], lost = ["..."]']
    for key in stages:
        if key not in ("won", "lost"):
            problems.append(
                f"{STAGES_SECTION} {key}: unknown key; allowed keys are won and lost (other stages count as open)"
            )
    sets: dict[str, set[str]] = {}
    for key in ("won", "lost"):
        value = stages.get(key, [])
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, Sequence) or not all(isinstance(n, str) and n.strip() for n in names):
            problems.append(f"{STAGES_SECTION} {key} = {value!r}: must be a list of stage names in quotes")
            names = []
        sets[key] = {n.strip().casefold() for n in names}
    if not sets["won"] and not any(p.startswith(f"{STAGES_SECTION} won =") for p in problems):
        problems.append(
            f'{STAGES_SECTION} won is required: list the stage names that mean a won deal, e.g. won = ["Closed Won"]'
        )
    both = sorted(sets["won"] & sets["lost"])
    if both:
        problems.append(
            f"{STAGES_SECTION} {', '.join(_quoted(s) for s in both)}: listed under both won and lost; keep each in one"
        )
    return sets["won"], sets["lost"], problems


def _check_deals_config(
    path: Path, columns: Mapping[str, str], stages: Mapping[str, Sequence[str]]
) -> tuple[_Layout, dict[str, int], set[str], set[str]]:
    layout = _inspect(path, "deals")
    won, lost, problems = _stage_sets(stages)
    try:
        mapping = _resolve(
            layout,
            columns,
            section=DEALS_SECTION,
            schema=DEAL_SCHEMA,
            required=("account_id", "stage"),
            derived=("is_won", "is_closed"),
        )
    except BookError as e:
        problems = list(e.problems) + problems
        mapping = {}
    if problems:
        raise BookError(
            f"{layout.path}: {len(problems)} problem(s) with {DEALS_SECTION} / {STAGES_SECTION}:\n  "
            + "\n  ".join(problems),
            path=layout.path,
            problems=problems,
        )
    return layout, mapping, won, lost


def _read_deals(
    path: str | os.PathLike[str],
    columns: Mapping[str, str],
    stages: Mapping[str, Sequence[str]],
    decimal: Decimal,
) -> tuple[pd.DataFrame, ParseReport, pd.Series]:
    layout, mapping, won, lost = _check_deals_config(Path(path), columns, stages)
    named, rows = _read_mapped(layout, mapping)
    if named.empty:
        raise BookError(
            f"{layout.path}: has a header but no rows; expected one row per deal below the header "
            f"(leave the deals file out of the config if the book has no deals)",
            path=layout.path,
        )
    deals, report, rows = _conform(named, rows, DEAL_SCHEMA, "deals", layout, decimal)
    if "id" in mapping:
        _check_ids(deals["id"], rows, layout, mapping["id"], "deal", allow_blank=True)

    stage_key = deals["stage"].str.casefold()
    is_won = stage_key.isin(won).to_numpy(dtype=bool)
    is_closed = is_won | stage_key.isin(lost).to_numpy(dtype=bool)
    deals["is_won"] = pd.array(is_won, dtype="boolean")
    deals["is_closed"] = pd.array(is_closed, dtype="boolean")
    open_stages = deals["stage"][~is_closed].fillna("(blank)").value_counts()
    report.unknown_stages = {str(k): int(v) for k, v in open_stages.items()}
    return deals, report, rows


def _cell_text(values: pd.Series) -> pd.Series:
    """Score values as the text a CRM/spreadsheet expects: whole numbers without ".0", UTC times as ISO 8601."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        dt = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        return dt.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype("string").fillna("")
    if pd.api.types.is_float_dtype(values.dtype):
        v = values.to_numpy(dtype=float, na_value=np.nan)
        if np.all(np.isnan(v) | (np.isfinite(v) & (np.floor(v) == v))):
            return values.astype("Int64").astype("string").fillna("")
    return values.astype("string").fillna("")


def _neutralize(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.apply(neutralize_formulas)
