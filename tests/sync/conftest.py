"""Fixtures for the sync engine: a seeded sandbox per test, a config pointing the real connector at it,
and a profile learned once per session from the same book."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sandbox import Sandbox
from sync import pipeline
from sync.config import parse_config

N_ACCOUNTS = 300


@contextmanager
def in_background(sb, fn: Callable[[], Any]) -> Iterator[dict]:
    """Run `fn()` (a job run) in a thread while the test acts on the sandbox; on leaving the block, release
    whatever request the sandbox holds, wait for the thread and re-raise its error. `box["value"]` is the
    result once the block is left."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    box["thread"] = thread
    thread.start()
    try:
        yield box
    finally:
        sb.faults.release()
        thread.join(timeout=300)
    assert not thread.is_alive()
    if "error" in box:
        raise box["error"]


def session_env(sb) -> dict[str, str]:
    """The secrets that point the real connector at the sandbox's Salesforce (an existing session)."""
    return {
        "SF_INSTANCE_URL": sb.salesforce.instance_url,
        "SF_ACCESS_TOKEN": sb.salesforce.access_token,
        "SF_CA_BUNDLE": sb.salesforce.ca_bundle,
    }


def make_config(tmp_path, sb, *, extra: dict | None = None, env: dict | None = None):
    raw = {
        "crm": {"kind": "salesforce"},
        "icp": {"profile": "icp-profile.toml", "state_dir": ".icp"},
        "sync": {"lookback_minutes": 0},
    }
    for key, value in (extra or {}).items():
        raw.setdefault(key, {}).update(value) if isinstance(value, dict) else raw.__setitem__(key, value)
    secrets = session_env(sb) if env is None else env
    return parse_config(raw, path=tmp_path / "icp.toml", env=secrets)


@pytest.fixture(scope="session")
def learned_profile(tmp_path_factory):
    """One profile for the session, learned through the connector from a sandbox seeded like the tests'."""
    directory = tmp_path_factory.mktemp("profile")
    with Sandbox(accounts=N_ACCOUNTS, seed=7, with_icp_fields=True) as sb:
        config = make_config(directory, sb)
        book = pipeline.load_book(config)
        pipeline.learn(config, book)
    return directory / "icp-profile.toml"


@pytest.fixture
def sb():
    with Sandbox(accounts=N_ACCOUNTS, seed=7, with_icp_fields=True) as sandbox:
        yield sandbox


@pytest.fixture
def config(tmp_path, sb, learned_profile):
    shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
    return make_config(tmp_path, sb)
