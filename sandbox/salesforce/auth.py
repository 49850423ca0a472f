"""Logins and sessions for the sandbox org: SOAP partner login, OAuth 2.0 token flows, and bearer checks.

Flows accepted (the credentials are the fixed ones in `SandboxOptions`):
- SOAP `login` with username and password + security token;
- OAuth `password` (client id/secret + username + password, with or without the security token appended);
- OAuth `client_credentials` (client id/secret in a Basic `Authorization` header, or in the form);
- OAuth JWT bearer: the assertion must be a well-formed RS256 JWT whose `iss` is the consumer key, `sub` the
  username and `exp` in the future. The signature is NOT verified: the sandbox has no connected-app
  certificate to check it against, and what the connector under test controls is the flow, not the key.

Every issued session token stays valid until an `expire_session` fault revokes it. The pre-issued
`options.sf_access_token` needs no login, but is revoked the same way (a client holding only a session id
must then get a new one, as on Salesforce); `reset_sessions()` brings it back.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time

from lxml import etree
from werkzeug.wrappers import Request, Response

from sandbox.salesforce.store import API_USER_ID, ORG_ID

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PARTNER_NS = "urn:partner.soap.sforce.com"
FAULT_NS = "urn:fault.partner.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SAFE_XML = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class Sessions:
    """Issued session tokens; thread-safe."""

    def __init__(self, options) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._valid: set[str] = set()
        self._revoked: set[str] = set()

    def issue(self) -> str:
        token = f"{ORG_ID[:15]}!AQ{secrets.token_hex(24)}"
        with self._lock:
            self._valid.add(token)
        return token

    def is_valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            if token in self._revoked:
                return False
            return token in self._valid or token == self.options.sf_access_token

    def revoke(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._valid.discard(token)
                self._revoked.add(token)

    def reset(self) -> None:
        """Make the pre-issued token valid again (tests that expired it on purpose)."""
        with self._lock:
            self._revoked.discard(self.options.sf_access_token)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() in ("bearer", "oauth") and token.strip():
        return token.strip()
    return None


# -- SOAP partner login -----------------------------------------------------------------------------------------
def soap_login(request: Request, sessions: Sessions, base_url: str, version: str) -> Response:
    options = sessions.options
    try:
        root = etree.fromstring(request.get_data(), SAFE_XML)
    except etree.XMLSyntaxError:
        return soap_fault("INVALID_LOGIN", "Invalid username, password, security token; or user locked out.")
    username = root.findtext(f".//{{{PARTNER_NS}}}login/{{{PARTNER_NS}}}username")
    password = root.findtext(f".//{{{PARTNER_NS}}}login/{{{PARTNER_NS}}}password")
    expected = options.sf_password + options.sf_security_token
    if username != options.sf_username or password != expected:
        return soap_fault("INVALID_LOGIN", "Invalid username, password, security token; or user locked out.")
    token = sessions.issue()
    envelope = etree.Element(
        f"{{{SOAP_ENV}}}Envelope", nsmap={"soapenv": SOAP_ENV, None: PARTNER_NS, "xsi": XSI}
    )
    body = etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")
    result = etree.SubElement(
        etree.SubElement(body, f"{{{PARTNER_NS}}}loginResponse"), f"{{{PARTNER_NS}}}result"
    )
    org15 = ORG_ID[:15]
    for name, value in (
        ("metadataServerUrl", f"{base_url}/services/Soap/m/{version}/{org15}"),
        ("passwordExpired", "false"),
        ("sandbox", "true"),
        ("serverUrl", f"{base_url}/services/Soap/u/{version}/{org15}"),
        ("sessionId", token),
        ("userId", API_USER_ID),
    ):
        etree.SubElement(result, f"{{{PARTNER_NS}}}{name}").text = value
    info = etree.SubElement(result, f"{{{PARTNER_NS}}}userInfo")
    for name, value in (
        ("organizationId", ORG_ID),
        ("organizationName", "icp-sync sandbox"),
        ("userEmail", options.sf_username),
        ("userFullName", "Integration User"),
        ("userId", API_USER_ID),
        ("userName", options.sf_username),
        ("userTimeZone", "Etc/UTC"),
    ):
        etree.SubElement(info, f"{{{PARTNER_NS}}}{name}").text = value
    return xml_response(envelope)


def soap_fault(code: str, message: str, status: int = 500) -> Response:
    """A partner-API SOAP fault; simple-salesforce reads `sf:exceptionCode` and `sf:exceptionMessage`."""
    envelope = etree.Element(
        f"{{{SOAP_ENV}}}Envelope", nsmap={"soapenv": SOAP_ENV, "sf": FAULT_NS, "xsi": XSI}
    )
    fault = etree.SubElement(etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body"), f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"sf:{code}"
    etree.SubElement(fault, "faultstring").text = f"{code}: {message}"
    detail = etree.SubElement(etree.SubElement(fault, "detail"), f"{{{FAULT_NS}}}LoginFault")
    detail.set(f"{{{XSI}}}type", "sf:LoginFault")
    etree.SubElement(detail, f"{{{FAULT_NS}}}exceptionCode").text = code
    etree.SubElement(detail, f"{{{FAULT_NS}}}exceptionMessage").text = message
    return xml_response(envelope, status)


def xml_response(root, status: int = 200) -> Response:
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return Response(body, status=status, content_type="text/xml; charset=utf-8")


# -- OAuth 2.0 --------------------------------------------------------------------------------------------------
def oauth_token(request: Request, sessions: Sessions, base_url: str) -> Response:
    options = sessions.options
    form = request.form
    grant = form.get("grant_type", "")
    if grant == "password":
        if (form.get("client_id"), form.get("client_secret")) != (
            options.sf_consumer_key,
            options.sf_consumer_secret,
        ):
            return oauth_error("invalid_client_id", "client identifier invalid")
        password = form.get("password") or ""
        accepted = (options.sf_password, options.sf_password + options.sf_security_token)
        if form.get("username") != options.sf_username or password not in accepted:
            return oauth_error("invalid_grant", "authentication failure")
    elif grant == "client_credentials":
        key, secret = _basic_credentials(request) or (form.get("client_id"), form.get("client_secret"))
        if (key, secret) != (options.sf_consumer_key, options.sf_consumer_secret):
            return oauth_error("invalid_client", "invalid client credentials")
    elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
        problem = _check_jwt(form.get("assertion", ""), options)
        if problem:
            return oauth_error("invalid_grant", problem)
    else:
        return oauth_error("unsupported_grant_type", "grant type not supported")
    token = sessions.issue()
    issued_at = str(int(time.time() * 1000))
    return json_plain(
        {
            "access_token": token,
            "instance_url": base_url,
            "id": f"{base_url}/id/{ORG_ID}/{API_USER_ID}",
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
            "scope": "api",
        }
    )


def userinfo(base_url: str, username: str) -> Response:
    """OpenID Connect UserInfo for the session's user (every sandbox session runs as the integration user).
    The keys an integration reads are `user_id`, `organization_id`, `preferred_username` and `sub` (the
    identity URL); JSON content type, which simple-salesforce's `oauth2()` needs to parse the body."""
    return json_plain(
        {
            "sub": f"{base_url}/id/{ORG_ID}/{API_USER_ID}",
            "user_id": API_USER_ID,
            "organization_id": ORG_ID,
            "preferred_username": username,
            "name": "Integration User",
            "email": username,
            "email_verified": True,
            "active": True,
            "user_type": "STANDARD",
            "utcOffset": 0,
        }
    )


def oauth_error(error: str, description: str, status: int = 400) -> Response:
    return json_plain({"error": error, "error_description": description}, status)


def json_plain(data, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json;charset=UTF-8")


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        key, _, secret = base64.b64decode(encoded).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return key, secret


def _check_jwt(assertion: str, options) -> str | None:
    """Why a JWT bearer assertion is refused, or None. The signature is not verified (see module docstring)."""
    parts = assertion.split(".")
    if len(parts) != 3 or not all(parts):
        return "invalid assertion"
    try:
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
        _b64url(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return "invalid assertion"
    if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
        return "invalid assertion"
    if claims.get("iss") != options.sf_consumer_key:
        return "invalid client credentials"
    if claims.get("sub") != options.sf_username:
        return "user hasn't approved this consumer"
    try:
        expires = float(claims.get("exp"))
    except (TypeError, ValueError):
        return "invalid assertion"
    if expires < time.time():
        return "expired authorization code"
    return None


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
