"""`icp sandbox serve`: run the local Salesforce + HubSpot sandbox until Ctrl-C or SIGTERM.

The lead mounts `serve` under the `icp sandbox` group; it also runs on its own
(`python -c "from sandbox.cli import serve; serve()" --json`).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading

import click

from sandbox.faults import Faults, FaultSpecError
from sandbox.salesforce.bulk2 import MAX_UPLOAD_BYTES
from sandbox.server import Sandbox, SandboxOptions


def _check_faults(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        Faults.from_spec(value)
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


@click.command("serve")
@click.option(
    "--port",
    type=click.IntRange(0, 65534),
    default=0,
    show_default=True,
    help="Salesforce (HTTPS) port; HubSpot (HTTP) listens on PORT+1. 0 picks two free ports.",
)
@click.option(
    "--accounts",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="Accounts in the seeded book (ignored if --db already holds data).",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed for the book and for fault draws.")
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    default=None,
    help="SQLite file to keep the state in across runs (default: in memory).",
)
@click.option(
    "--faults",
    callback=_check_faults,
    default=None,
    metavar="SPEC",
    help="Faults to inject, e.g. 'rate_limit:0.05,drop:x1@sf.query,record_lock:0.01,quota:500,seed=3'.",
)
@click.option("--with-fields", is_flag=True, help="Create the ICP custom fields/properties up front.")
@click.option(
    "--bulk-upload-limit",
    type=click.IntRange(1),
    default=MAX_UPLOAD_BYTES,
    show_default=True,
    metavar="BYTES",
    help="Largest Bulk API 2.0 upload accepted (Salesforce's limit); lower it to rehearse split uploads.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON line with the connection details once ready."
)
@click.option("--log-requests", is_flag=True, help="Log every request to stderr.")
def serve(port, accounts, seed, db, faults, with_fields, bulk_upload_limit, as_json, log_requests) -> None:
    """Serve a local Salesforce- and HubSpot-compatible CRM seeded with a sample book."""
    options = SandboxOptions(
        accounts=accounts,
        seed=seed,
        db=db or ":memory:",
        port=port,
        hubspot_port=port + 1 if port else 0,
        faults=faults,
        with_icp_fields=with_fields,
        salesforce_bulk_upload_bytes=bulk_upload_limit,
        log_requests=log_requests,
    )
    stop = threading.Event()
    # Ctrl-C and SIGTERM both just ask the serving loop to end: no KeyboardInterrupt can land half-way
    # through start-up or shutdown.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        sandbox = Sandbox(options)
    except sqlite3.Error as exc:
        raise click.ClickException(f"cannot open the database {db}: {exc}") from None
    try:
        sandbox.start()
    except (OSError, SystemExit) as exc:
        # werkzeug reports a busy port by printing a hint and calling sys.exit(1).
        sandbox.stop()
        reason = exc.strerror if isinstance(exc, OSError) else "address already in use"
        raise click.ClickException(f"cannot listen on port {port} or {port + 1}: {reason}") from None
    try:
        if as_json:
            click.echo(json.dumps(sandbox.connection_info()))
        else:
            click.echo(_summary(sandbox))
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    if not as_json:
        click.echo("Sandbox stopped.", err=True)


def _summary(sandbox: Sandbox) -> str:
    info = sandbox.connection_info()
    sf, hs = info["salesforce"], info["hubspot"]
    o = sandbox.options
    lines = [
        f"icp-sync sandbox: {o.accounts:,} accounts (seed {o.seed}){' from ' + o.db if o.db != ':memory:' else ''}",
        "",
        "Salesforce",
        f"  instance URL    {sf['instance_url']}",
        f"  access token    {sf['access_token']}",
        f"  username        {sf['username']}",
        f"  password        {sf['password']}   security token {sf['security_token']}",
        f"  consumer key    {sf['consumer_key']}   secret {sf['consumer_secret']}",
        f"  CA bundle       {sf['ca_bundle']}",
        "HubSpot",
        f"  base URL        {hs['base_url']}",
        f"  access token    {hs['access_token']}",
    ]
    if o.faults:
        lines.append(f"Faults            {o.faults}")
    if o.salesforce_bulk_upload_bytes != MAX_UPLOAD_BYTES:
        lines.append(f"Bulk uploads      at most {o.salesforce_bulk_upload_bytes:,} bytes each")
    lines += ["", "Press Ctrl-C to stop."]
    return "\n".join(lines)


if __name__ == "__main__":
    serve()
