"""Salesforce record ids for the sandbox: 15-character case-sensitive ids plus the 3-character case-safe suffix.

Ids are made from a per-object counter in base 62 written with the digits in ASCII order, so for one object
a later record always has a larger id, as on a real org (cursor tie-breaks on `Id` rely on that), and the
suffix is computed the way Salesforce does it: one letter per 5-character chunk telling which are upper case.
"""

from __future__ import annotations

import re

import numpy as np

# ASCII order (0-9 < A-Z < a-z), so comparing two ids as strings compares their counters.
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
POD = "8d"  # the two "instance" characters after the key prefix
COUNTER_WIDTH = 10
# Counters start here rather than at 1 so ids look like a real org's (mixed case, not 000...001).
COUNTER_START = 2 * 62**7 + 17 * 62**5

KEY_PREFIXES = {
    "Account": "001",
    "Opportunity": "006",
    "User": "005",
    "Organization": "00D",
    "CustomField": "00N",
    "QueryLocator": "01g",
    "BulkJob": "750",
}

_ID_CHARS = re.compile(r"^[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?$")


def checksum_suffix(id15: str) -> str:
    """The 3 characters Salesforce appends to a 15-character id to make it case-insensitively unique."""
    out = []
    for chunk in range(3):
        flags = 0
        for pos, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                flags |= 1 << pos
        out.append(SUFFIX_ALPHABET[flags])
    return "".join(out)


def make_id(prefix: str, number: int) -> str:
    """The 18-character id of the `number`-th record (1-based) with this key prefix."""
    return str(make_ids(prefix, number, 1)[0])


def make_ids(prefix: str, first: int, count: int) -> np.ndarray:
    """`count` consecutive 18-character ids starting at the `first`-th, as an object array (vectorised)."""
    if len(prefix) != 3:
        raise ValueError(f"key prefix must have 3 characters, got {prefix!r}")
    numbers = np.arange(first, first + count, dtype=np.int64) + COUNTER_START
    alphabet = np.frombuffer(BASE62.encode(), dtype=np.uint8)
    chars = np.empty((count, 15), dtype=np.uint8)
    chars[:, :3] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    chars[:, 3:5] = np.frombuffer(POD.encode(), dtype=np.uint8)
    rest = numbers.copy()
    for col in range(14, 4, -1):
        chars[:, col] = alphabet[rest % 62]
        rest //= 62
    if (rest > 0).any():
        raise OverflowError("id counter exhausted")
    upper = ((chars >= ord("A")) & (chars <= ord("Z"))).reshape(count, 3, 5).astype(np.int64)
    flags = upper @ np.array([1, 2, 4, 8, 16], dtype=np.int64)
    suffix_alphabet = np.frombuffer(SUFFIX_ALPHABET.encode(), dtype=np.uint8)
    full = np.concatenate([chars, suffix_alphabet[flags]], axis=1)
    return full.view("S18").ravel().astype(str).astype(object)


def normalize_id(value: object) -> str | None:
    """The 18-character form of a 15- or 18-character id, or None if it is not a well-formed id.

    An 18-character id whose suffix does not match its first 15 characters is malformed, as on Salesforce.
    """
    if not isinstance(value, str) or not _ID_CHARS.match(value):
        return None
    id15 = value[:15]
    suffix = checksum_suffix(id15)
    if len(value) == 18 and value[15:].upper() != suffix:
        return None
    return id15 + suffix


def id_number(id18: str) -> int:
    """The counter a sandbox id was made from (inverse of `make_id`), for ids this sandbox issued."""
    n = 0
    for char in id18[5:15]:
        n = n * 62 + BASE62.index(char)
    return n - COUNTER_START
