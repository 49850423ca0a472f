"""The sandbox: a local CRM speaking Salesforce's and HubSpot's wire protocols over real HTTP on 127.0.0.1.

`Sandbox` is what tests, `icp demo` and `icp sandbox serve` start: one SQLite database (a file or memory),
seeded from the sample book, a Salesforce app served over TLS (simple-salesforce only builds https URLs)
and a HubSpot app over plain HTTP, each in its own server thread, sharing one `Faults` registry and one
`CallCounter`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import sqlite3
import tempfile
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from werkzeug.serving import make_server

from sandbox.book import generate_book
from sandbox.faults import Faults
from sandbox.salesforce.bulk2 import MAX_UPLOAD_BYTES


class Database:
    """One SQLite connection shared by the server threads; every statement runs under one lock.

    SQLite serialises writers anyway; one lock keeps reads consistent with in-flight writes and lets
    the vendor apps use plain transactions (`with db.transaction() as conn:`).
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute(
            "PRAGMA journal_mode=WAL" if self.path != ":memory:" else "PRAGMA journal_mode=MEMORY"
        )
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.lock = threading.RLock()

    @contextmanager
    def transaction(self):
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    @contextmanager
    def reading(self):
        with self.lock:
            yield self.conn

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class CallCounter:
    """Counts API calls per endpoint label (e.g. "sf.query", "sf.composite.sobjects", "hs.companies.batch.update"),
    and how many requests are in flight: arrived at a vendor app and not yet applied and answered.

    Tests wait on it instead of on the clock: `wait_for("sf.composite", 4)` until the fourth call has
    arrived, `wait_idle()` until every request that arrived has been applied (a write that arrived just
    before its client died still lands, as on a real server).
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._counts: Counter = Counter()
        self._in_flight = 0

    def hit(self, label: str) -> None:
        with self._lock:
            self._counts[label] += 1
            self._lock.notify_all()

    def count(self, prefix: str = "") -> int:
        with self._lock:
            return self._count(prefix)

    def _count(self, prefix: str) -> int:
        return sum(v for k, v in self._counts.items() if k.startswith(prefix))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    # -- requests in flight ---------------------------------------------------------------------------------
    def arrived(self) -> None:
        """A request reached a vendor app (called before it is matched, counted, delayed or applied)."""
        with self._lock:
            self._in_flight += 1

    def answered(self) -> None:
        """The app is done with the request: applied (or refused) and its answer built, not yet sent."""
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def wait_for(self, prefix: str, at_least: int, timeout: float | None = None) -> bool:
        """Block until `at_least` calls whose label starts with `prefix` have arrived; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._count(prefix) >= at_least, timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no request is in flight; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout)


@dataclass
class SandboxOptions:
    accounts: int = 2000
    seed: int = 7
    db: str = ":memory:"
    host: str = "127.0.0.1"
    port: int = 0  # Salesforce (TLS); 0 = a free port
    hubspot_port: int = 0  # HubSpot (plain HTTP); 0 = a free port
    page_size: int = 2000  # Salesforce query batch size (nextRecordsUrl paging)
    with_icp_fields: bool = False  # create the ICP custom fields/properties up front
    hubspot_rate_limit: int = 100  # requests per window (private app, Free/Starter)
    hubspot_rate_window_s: float = 10.0
    salesforce_daily_limit: int = 5_000_000  # the "total" of Sforce-Limit-Info api-usage
    # Bytes one Bulk API 2.0 upload may carry; above it the upload is refused (400). Salesforce's and the
    # SDK's limit by default; tests lower it to need several jobs without a 100 MB upload.
    salesforce_bulk_upload_bytes: int = MAX_UPLOAD_BYTES
    hubspot_daily_limit: int = 1_000_000
    faults: str | None = None  # a --faults spec
    log_requests: bool = False  # one line per request on stderr (werkzeug's access log)
    # Credentials the sandbox accepts; fixed so a person can paste them from `icp sandbox serve --json`.
    sf_username: str = "rep@sandbox.icp"
    sf_password: str = "sandbox-password"
    sf_security_token: str = "SANDBOXTOKEN"
    sf_consumer_key: str = "sandbox-consumer-key"
    sf_consumer_secret: str = "sandbox-consumer-secret"
    sf_access_token: str = "00Dsandbox!session"
    hubspot_access_token: str = "pat-sandbox-0000"


@dataclass
class SalesforceInfo:
    instance_url: str
    access_token: str
    username: str
    password: str
    security_token: str
    consumer_key: str
    consumer_secret: str
    ca_bundle: str
    login_url: str  # where the login endpoints are (same host as the instance in the sandbox)


@dataclass
class HubSpotInfo:
    base_url: str
    access_token: str


@dataclass
class _Served:
    server: object
    thread: threading.Thread = field(repr=False)


class Sandbox:
    """Start with `with Sandbox(accounts=500) as sb:`; `sb.salesforce`, `sb.hubspot` say where and how to connect.

    Tests reach the state directly: `sb.faults` (inject/clear), `sb.calls` (per-endpoint counts),
    `sb.sf` and `sb.hs` (the vendor apps: stored records, direct edits that act like a person in the CRM UI).
    """

    def __init__(self, options: SandboxOptions | None = None, **overrides) -> None:
        self.options = options or SandboxOptions()
        for key, value in overrides.items():
            if not hasattr(self.options, key):
                raise TypeError(f"unknown sandbox option {key!r}")
            setattr(self.options, key, value)
        self.faults = Faults.from_spec(self.options.faults, seed=self.options.seed)
        self.calls = CallCounter()
        self.db = Database(self.options.db)
        self._tmp = tempfile.TemporaryDirectory(prefix="icp-sandbox-")
        self.cert_file, self.key_file = write_self_signed_cert(Path(self._tmp.name), self.options.host)
        self.sf = None
        self.hs = None
        self._served: list[_Served] = []
        self.salesforce: SalesforceInfo | None = None
        self.hubspot: HubSpotInfo | None = None

    def start(self) -> Sandbox:
        from sandbox.hubspot import HubSpotApp
        from sandbox.salesforce import SalesforceApp

        o = self.options
        logging.getLogger("werkzeug").setLevel(logging.INFO if o.log_requests else logging.WARNING)
        self.sf = SalesforceApp(self.db, self.faults, self.calls, o)
        self.hs = HubSpotApp(self.db, self.faults, self.calls, o)
        if self.sf.is_empty() or self.hs.is_empty():
            book = generate_book(o.accounts, seed=o.seed)
            if self.sf.is_empty():
                self.sf.seed(book)
            if self.hs.is_empty():
                self.hs.seed(book)
        sf_server = self._serve(self.sf, o.port, ssl=True)
        hs_server = self._serve(self.hs, o.hubspot_port, ssl=False)
        sf_url = f"https://{o.host}:{sf_server.server_port}"
        self.sf.base_url = sf_url
        self.salesforce = SalesforceInfo(
            instance_url=sf_url,
            access_token=o.sf_access_token,
            username=o.sf_username,
            password=o.sf_password,
            security_token=o.sf_security_token,
            consumer_key=o.sf_consumer_key,
            consumer_secret=o.sf_consumer_secret,
            ca_bundle=str(self.cert_file),
            login_url=sf_url,
        )
        self.hubspot = HubSpotInfo(
            base_url=f"http://{o.host}:{hs_server.server_port}", access_token=o.hubspot_access_token
        )
        return self

    def _serve(self, app, port: int, *, ssl: bool):
        ssl_context = (str(self.cert_file), str(self.key_file)) if ssl else None
        server = make_server(self.options.host, port, app, threaded=True, ssl_context=ssl_context)
        # A short poll interval: `stop()` waits for the serving loop to notice, at most this long per server.
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sandbox-{port}", daemon=True
        )
        thread.start()
        self._served.append(_Served(server, thread))
        return server

    def stop(self) -> None:
        if self.sf is not None:
            self.sf.close()  # Bulk API jobs still running stop before their next chunk, not after the db closes
        self.faults.release()  # a request parked by `faults.hold` must not outlive the sandbox
        for served in self._served:
            served.server.shutdown()
            served.server.server_close()
            served.thread.join(timeout=5)
        self._served.clear()
        self.db.close()
        self._tmp.cleanup()

    def connection_info(self) -> dict:
        """What `icp sandbox serve --json` prints: everything a client needs to connect."""
        s, h = self.salesforce, self.hubspot
        return {
            "salesforce": {
                "instance_url": s.instance_url,
                "access_token": s.access_token,
                "username": s.username,
                "password": s.password,
                "security_token": s.security_token,
                "ca_bundle": s.ca_bundle,
                "consumer_key": s.consumer_key,
                "consumer_secret": s.consumer_secret,
            },
            "hubspot": {"base_url": h.base_url, "access_token": h.access_token},
        }

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def write_self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway CA-less certificate for 127.0.0.1/localhost; clients trust it via its own file as CA bundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "icp-sync sandbox")])
    now = dt.datetime.now(dt.UTC)
    alt_names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if host not in ("127.0.0.1", "localhost"):
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "sandbox-cert.pem", directory / "sandbox-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file
