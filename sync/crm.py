"""Opening the configured CRM: a connector built from the config and the environment's secrets.

`crm.kind = "sandbox"` runs the real Salesforce connector against a local sandbox started for the command
(its state kept in `[sandbox] db`, so runs see each other's writes): a rehearsal with nothing at stake.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pandas as pd

from connectors.base import Connector
from connectors.retry import RetryPolicy
from connectors.salesforce import SalesforceConnector, SalesforceSettings
from connectors.schema import ParseReport
from sync.config import Config, ConfigError


def salesforce_settings(config: Config) -> SalesforceSettings:
    """`[salesforce]` from the config, with what the environment overrides and the reasons' length."""
    sf, env = config.salesforce, config.secrets

    def from_env(name: str, default):
        return env[name].reveal() if name in env else default

    return replace(
        sf,
        api_version=from_env("SF_API_VERSION", sf.api_version).lstrip("v"),
        domain=from_env("SF_DOMAIN", sf.domain),
        login_url=from_env("SF_LOGIN_URL", None),
        ca_bundle=from_env("SF_CA_BUNDLE", None),
        reasons_length=config.reasons_max_len,
    )


def crm_key(config: Config) -> str:
    """The name state files keep this CRM's records under."""
    return config.crm


@contextmanager
def open_crm(config: Config, *, policy: RetryPolicy | None = None) -> Iterator[Connector]:
    """The configured CRM's connector (the only place that picks one by `crm.kind`)."""
    if config.crm == "salesforce":
        yield SalesforceConnector(salesforce_settings(config), config.secrets, policy=policy)
    elif config.crm == "sandbox":
        from sandbox import Sandbox

        sb_cfg = config.sandbox
        sb_cfg.db.parent.mkdir(parents=True, exist_ok=True)
        with Sandbox(
            db=str(sb_cfg.db), accounts=sb_cfg.accounts, seed=sb_cfg.seed, faults=sb_cfg.faults
        ) as sb:
            settings = replace(salesforce_settings(config), ca_bundle=sb.salesforce.ca_bundle, login_url=None)
            secrets = {
                "SF_INSTANCE_URL": sb.salesforce.instance_url,
                "SF_ACCESS_TOKEN": sb.salesforce.access_token,
            }
            yield SalesforceConnector(settings, secrets, policy=policy)
    else:
        raise ConfigError(
            config.path,
            [f"crm.kind = {config.crm!r}: this command needs a CRM (salesforce or sandbox), not a CSV book"],
        )


def progress_bar(enabled: bool, total: int | None, label: str):
    import click

    if not enabled:
        return _NoProgress()
    return click.progressbar(length=total or 0, label=label, file=sys.stderr, show_pos=True)


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        pass


def pull_accounts(
    connector: Connector,
    *,
    since=None,
    ids=None,
    where=None,
    progress=False,
    report: ParseReport | None = None,
    skip_own_writes: bool = False,
) -> pd.DataFrame:
    """Every account the filters select, as one frame; unreadable values are noted in `report`.
    `skip_own_writes` leaves out records whose last change is ours (see `Connector.iter_accounts`)."""
    skip = skip_own_writes
    total = connector.count_accounts(since=since, ids=ids, where=where, skip_own_writes=skip)
    frames = []
    with progress_bar(progress, total, "pulling accounts") as bar:
        pages = connector.iter_accounts(
            since=since, ids=ids, where=where, total=total, report=report, skip_own_writes=skip
        )
        for page in pages:
            frames.append(page)
            bar.update(len(page))
    if not frames:
        return pd.DataFrame(columns=["id", "_modstamp"])
    accounts = pd.concat(frames, ignore_index=True)
    # A record modified while we paged can show up twice; the later copy wins.
    return accounts.drop_duplicates("id", keep="last").reset_index(drop=True)


def pull_deals(connector: Connector, *, report: ParseReport | None = None) -> pd.DataFrame | None:
    frames = list(connector.iter_deals(report=report))
    return pd.concat(frames, ignore_index=True) if frames else None
