"""`sandbox serve`: a real subprocess that prints its connection details and serves until told to stop, and
the option checks a person sees at the command line."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from click.testing import CliRunner
from simple_salesforce import Salesforce

from sandbox.cli import serve

COMMAND = [sys.executable, "-c", "from sandbox.cli import serve; serve()"]


def read_line(stream, timeout: float) -> str:
    """One line from a subprocess pipe, or fail the test after `timeout` seconds."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        if not selector.select(max(0.0, deadline - time.monotonic())):
            pytest.fail(f"no complete line within {timeout}s (got {line!r})")
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            break
        line += chunk
    return line.decode()


@pytest.fixture
def server_process():
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([*COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_serve_json_prints_one_line_and_serves_until_sigterm(server_process):
    proc = server_process(
        "--json", "--accounts", "120", "--seed", "3", "--with-fields", "--faults", "rate_limit:x1@sf.limits"
    )
    info = json.loads(read_line(proc.stdout, timeout=60))
    sf_info = info["salesforce"]
    assert info["hubspot"]["base_url"].startswith("http://127.0.0.1:")
    session = requests.Session()
    session.verify, session.trust_env = sf_info["ca_bundle"], False
    sf = Salesforce(instance_url=sf_info["instance_url"], session_id=sf_info["access_token"], session=session)
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 120
    assert "ICP_Tier__c" in {f["name"] for f in sf.Account.describe()["fields"]}
    assert (
        session.get(
            f"{sf_info['instance_url']}/services/data/v59.0/limits",
            headers={"Authorization": f"Bearer {sf_info['access_token']}"},
        ).status_code
        == 403
    )
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert out == b""  # nothing after the one JSON line


def test_serve_prints_a_summary_and_stops_on_ctrl_c(server_process):
    proc = server_process("--accounts", "30")
    lines = []
    while not lines or "Press Ctrl-C" not in lines[-1]:
        lines.append(read_line(proc.stdout, timeout=60))
    text = "".join(lines)
    assert "30 accounts" in text and "instance URL    https://127.0.0.1:" in text
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert b"Sandbox stopped." in err


def test_bad_faults_spec_is_a_usage_error_naming_the_part():
    result = CliRunner().invoke(serve, ["--faults", "rate_limit:0.1,explode:x2"])
    assert result.exit_code == 2
    assert "Invalid value for '--faults'" in result.output
    assert "'explode:x2'" in result.output


def test_a_busy_port_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(serve, ["--port", str(port), "--accounts", "5"])
    assert result.exit_code == 1
    assert f"cannot listen on port {port}" in result.output


def test_help_describes_every_option():
    result = CliRunner().invoke(serve, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--port",
        "--accounts",
        "--seed",
        "--db",
        "--faults",
        "--with-fields",
        "--bulk-upload-limit",
        "--json",
    ):
        assert option in result.output


def test_bulk_upload_limit_is_an_option_shown_in_the_summary(server_process):
    proc = server_process("--accounts", "5", "--bulk-upload-limit", "20000")
    lines = []
    while not lines or "Press Ctrl-C" not in lines[-1]:
        lines.append(read_line(proc.stdout, timeout=60))
    assert "Bulk uploads      at most 20,000 bytes each" in "".join(lines)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    assert proc.returncode == 0
