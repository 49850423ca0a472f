"""Shared by the sandbox tests: how a test points the unmodified simple-salesforce at a sandbox."""

from __future__ import annotations

import requests
from simple_salesforce import Salesforce

from sandbox import Sandbox


def sf_session(sb: Sandbox) -> requests.Session:
    session = requests.Session()
    session.verify = sb.salesforce.ca_bundle
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides session.verify
    return session


def connect(sb: Sandbox) -> Salesforce:
    return Salesforce(
        instance_url=sb.salesforce.instance_url, session_id=sb.salesforce.access_token, session=sf_session(sb)
    )
