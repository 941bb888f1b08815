"""Google's Cloud SQL Python Connector, as far as a wasm component can have it.

`Connector` takes the argument names of ``google.cloud.sql.connector.Connector``
where they apply, and ``Connector.connect(instance, "pg8000", user=, password=,
db=, ...)`` returns a pg8000 DB-API connection, ready for SQLAlchemy's
``creator=``. Under it is the ``gcp:db-connector/connector`` WIT interface: the
connector component (composed with this app) gets the certificate, dials the
instance and does the TLS, and pg8000 speaks plain PostgreSQL over the
connection it hands back (pg8000 takes a socket-like object as ``sock``).

A failure of the connector raises a `ConnectorError` subclass named for the WIT
``error`` case (`DialError` for ``dial``, `AdminApiError` for ``admin-api``…),
whose ``case`` is the WIT name and whose message is the connector's, which never
holds a token or a key. `describe` finds one behind a pg8000 or SQLAlchemy
error, for an HTTP answer.
"""

import sys
import types

from wit_world.imports import connector as wit
from componentize_py_types import Err

# componentize-py's CPython has no _ssl (TLS is the connector's job here), but
# scramp, pg8000's SCRAM library, imports two names from ssl at import time, for
# an isinstance check on TLS sockets, which nothing here is. pg8000 itself
# imports ssl only when asked for TLS (never: ssl_context=False below).
try:
    import ssl  # noqa: F401
except ImportError:
    _stand_in = types.ModuleType("ssl", "ssl's names scramp imports; no TLS")
    _stand_in.SSLObject = type("SSLObject", (), {})
    _stand_in.SSLSocket = type("SSLSocket", (), {})
    sys.modules["ssl"] = _stand_in
    try:
        import pg8000.dbapi
    finally:
        del sys.modules["ssl"]
import pg8000.dbapi  # noqa: E402


__all__ = ["Connector", "IPTypes", "ConnectorError", "describe"]


class IPTypes:
    """The addresses an instance may have, as Google's connector names them."""

    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"
    PSC = "PSC"


_IP_TYPES = {
    "PUBLIC": wit.IpType.PUBLIC,
    "PRIMARY": wit.IpType.PUBLIC,
    "PRIVATE": wit.IpType.PRIVATE,
    "PSC": wit.IpType.PSC,
}


def _ip_type(value):
    """"public", "private" or "psc" (any case) or an `IPTypes` value."""
    if value is None:
        return None
    try:
        return _IP_TYPES[str(value).upper()]
    except KeyError:
        raise ValueError(
            f'ip_type {value!r}: use "public", "private" or "psc"'
        ) from None


class ConnectorError(Exception):
    """A failed call of the connector; ``case`` is the WIT error case."""

    case = "error"

    def __init__(self, message, status=None, code=None):
        super().__init__(f"{self.case}: {message}" if message else self.case)
        self.message = message
        #: Admin API errors: the HTTP status and Google's error.status.
        self.status = status
        self.code = code


def _error_class(case, name, bases=(ConnectorError,)):
    return type(name, bases, {"case": case, "__doc__": f"The WIT error `{case}`."})


# One class per case of the WIT `error` variant. Errors of an open connection
# are also ConnectionError (an OSError), which is what pg8000 expects of a
# socket: it reports them as InterfaceError("network error") with this as the
# cause.
_CASES = {
    wit.Error_InvalidInstanceName: _error_class("invalid-instance-name", "InvalidInstanceNameError"),
    wit.Error_InvalidConfig: _error_class("invalid-config", "InvalidConfigError"),
    wit.Error_Credentials: _error_class("credentials", "CredentialsError"),
    wit.Error_Http: _error_class("http", "HttpError"),
    wit.Error_AdminApi: _error_class("admin-api", "AdminApiError"),
    wit.Error_QuotaExceeded: _error_class("quota-exceeded", "QuotaExceededError"),
    wit.Error_InstanceMetadata: _error_class("instance-metadata", "InstanceMetadataError"),
    wit.Error_RegionMismatch: _error_class("region-mismatch", "RegionMismatchError"),
    wit.Error_Unsupported: _error_class("unsupported", "UnsupportedError"),
    wit.Error_IpTypeNotAvailable: _error_class("ip-type-not-available", "IPTypeNotAvailableError"),
    wit.Error_RateLimited: _error_class("rate-limited", "RateLimitedError"),
    wit.Error_Dial: _error_class("dial", "DialError"),
    wit.Error_Tls: _error_class("tls", "TLSError"),
    wit.Error_ServerVerification: _error_class("server-verification", "ServerVerificationError"),
    wit.Error_MetadataExchange: _error_class("metadata-exchange", "MetadataExchangeError"),
    wit.Error_Timeout: _error_class("timeout", "ConnectorTimeoutError", (ConnectorError, TimeoutError)),
    wit.Error_Io: _error_class("io", "ConnectionIOError", (ConnectorError, ConnectionError)),
    wit.Error_Closed: _error_class("closed", "ClosedError", (ConnectorError, ConnectionError)),
    wit.Error_Dns: _error_class("dns", "DnsResolutionError"),
}
for _cls in _CASES.values():
    globals()[_cls.__name__] = _cls
    __all__.append(_cls.__name__)
ClosedError = _CASES[wit.Error_Closed]


def _raise(err):
    """Raises the ConnectorError for the WIT error in `err` (an ``Err``)."""
    value = err.value
    cls = _CASES.get(type(value), ConnectorError)
    payload = getattr(value, "value", None)
    if isinstance(payload, wit.ApiError):
        raise cls(
            f"HTTP {payload.status} {payload.code}: {payload.message}",
            status=payload.status,
            code=payload.code,
        ) from None
    if isinstance(payload, wit.VerificationError):
        raise cls(f"{payload.check.name.lower()}: {payload.message}") from None
    raise cls(payload if isinstance(payload, str) else "") from None


class Connector:
    """Connects to Cloud SQL (and AlloyDB) instances through the connector
    component. Make one and reuse it: it holds the credentials, the key and the
    certificates.

    Arguments as Google's ``Connector``: ``ip_type`` ("public", "private",
    "psc"; default public), ``enable_iam_auth``, ``timeout`` (seconds, for the
    certificate refresh and for the dial, each), ``quota_project``,
    ``sqladmin_api_endpoint``, ``universe_domain``, ``user_agent``, and
    ``refresh_strategy``, which
    must be "lazy": a background refresh needs a thread that outlives the
    request, and a wasm instance has none.

    This connector's own: ``alloydb_api_endpoint``, ``credentials_file`` (the
    JSON of a service-account key or authorized_user file; default:
    Application Default Credentials), ``store_bucket`` (a ``wasi:keyvalue``
    bucket, in the connector build that has one), ``store_dir`` (a directory the
    host grants) and ``store_secret``, which share certificates and the key with
    later instances (see the project's README on the store).

    Nothing calls the connector until the first ``connect``: componentize-py
    runs the app's module code when it builds the component, where there is no
    host to call.
    """

    def __init__(
        self,
        ip_type=IPTypes.PUBLIC,
        enable_iam_auth=False,
        timeout=30,
        quota_project=None,
        sqladmin_api_endpoint=None,
        user_agent=None,
        refresh_strategy="lazy",
        universe_domain=None,
        alloydb_api_endpoint=None,
        credentials_file=None,
        store_bucket=None,
        store_dir=None,
        store_secret=None,
    ):
        if str(refresh_strategy).lower() != "lazy":
            raise ValueError(
                f"refresh_strategy {refresh_strategy!r}: only \"lazy\" in a wasm "
                "component (a background refresh needs a thread that outlives the "
                "request)"
            )
        if not timeout or timeout <= 0:
            raise ValueError(f"timeout {timeout!r}: seconds, more than 0")
        timeout_ms = min(int(timeout * 1000), 2**32 - 1)
        credentials = None
        if credentials_file:
            with open(credentials_file, encoding="utf-8") as f:
                credentials = wit.Credentials_Json(f.read())
        self._ip_type = _ip_type(ip_type)
        self._enable_iam_auth = bool(enable_iam_auth)
        self._config = wit.Config(
            credentials=credentials,
            impersonation=None,
            universe_domain=universe_domain or None,
            iam_credentials_endpoint=None,
            ip_type=self._ip_type,
            enable_iam_auth=self._enable_iam_auth,
            admin_endpoint=sqladmin_api_endpoint or None,
            alloydb_admin_endpoint=alloydb_api_endpoint or None,
            token_endpoint=None,
            metadata_host=None,
            quota_project=quota_project or None,
            user_agent=user_agent or None,
            rsa_private_key=None,
            store_bucket=store_bucket or None,
            store_dir=store_dir or None,
            store_private_key=None,
            store_secret=store_secret or None,
            refresh_timeout_ms=timeout_ms,
            dial_timeout_ms=timeout_ms,
            dns_resolver=None,
            failover_period_ms=None,
        )
        self._connector = None

    def _wit(self):
        if self._connector is None:
            try:
                self._connector = wit.Connector(self._config)
            except Err as e:
                _raise(e)
        return self._connector

    def _options(self, ip_type, enable_iam_auth):
        return wit.ConnectOptions(
            ip_type=_ip_type(ip_type),
            enable_iam_auth=None if enable_iam_auth is None else bool(enable_iam_auth),
        )

    def connect(self, instance_connection_string, driver, **kwargs):
        """A connection to the instance through ``driver`` (only "pg8000").

        ``user``, ``password`` (none with ``enable_iam_auth``), ``db``,
        ``ip_type`` and ``enable_iam_auth`` (each overrides the connector's),
        and pg8000's own keyword arguments (``application_name``,
        ``timeout``…).
        """
        if driver != "pg8000":
            raise ValueError(
                f"driver {driver!r}: only \"pg8000\" here (a pure-Python driver "
                "that takes the connection as a socket)"
            )
        ip_type = kwargs.pop("ip_type", None)
        enable_iam_auth = kwargs.pop("enable_iam_auth", None)
        user = kwargs.pop("user")
        password = kwargs.pop("password", None)
        db = kwargs.pop("db", None)
        try:
            conn = self._wit().connect(
                instance_connection_string, self._options(ip_type, enable_iam_auth)
            )
        except Err as e:
            _raise(e)
        sock = _Socket(conn)
        try:
            return pg8000.dbapi.connect(
                user,
                database=db,
                password=password,
                sock=sock,
                ssl_context=False,  # the connector's TLS is under it
                **kwargs,
            )
        except BaseException:
            sock.close()
            raise

    def warmup(self, instance_connection_string, ip_type=None, enable_iam_auth=None):
        """Gets the instance's certificate ready (or loads it from the store)
        without dialing, e.g. from a health route."""
        try:
            self._wit().warmup(
                instance_connection_string, self._options(ip_type, enable_iam_auth)
            )
        except Err as e:
            _raise(e)

    def close(self):
        """Drops the connector (and its cached certificates)."""
        if self._connector is not None:
            self._connector.__exit__(None, None, None)
            self._connector = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Socket:
    """What pg8000 asks of a socket when given one as ``sock``: ``makefile`` and
    ``close``."""

    def __init__(self, conn):
        self._file = _ConnectionFile(conn)

    def makefile(self, mode="rwb"):
        return self._file

    def close(self):
        self._file.close()


class _ConnectionFile:
    """The WIT connection as the binary file pg8000 reads and writes: reads
    are buffered (pg8000 reads a message header, then its body), writes wait
    for ``flush``, which pg8000 calls after each message it sends."""

    _READ_SIZE = 64 * 1024

    def __init__(self, conn):
        self._conn = conn
        self._in = b""
        self._out = bytearray()

    def read(self, size=-1):
        if self._conn is None:
            raise ClosedError("the connection is closed")
        if not self._in:
            try:
                self._in = self._conn.read(max(size, self._READ_SIZE))
            except Err as e:
                _raise(e)
            if not self._in:
                # pg8000 reads only what it expects: the end of the stream
                # is always the server going away mid-conversation.
                raise ClosedError("the server closed the connection")
        if size < 0:
            size = len(self._in)
        data, self._in = self._in[:size], self._in[size:]
        return data

    def write(self, data):
        if self._conn is None:
            raise ClosedError("the connection is closed")
        self._out += data
        return len(data)

    def flush(self):
        if self._conn is None:
            raise ClosedError("the connection is closed")
        if self._out:
            out, self._out = bytes(self._out), bytearray()
            try:
                self._conn.write(out)
                self._conn.flush()
            except Err as e:
                _raise(e)

    def close(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.shutdown()
            except Err:
                pass  # already broken: nothing left to tell the server
            conn.__exit__(None, None, None)


def describe(exc):
    """``(http_status, message)`` for an exception from a request's database
    work: the connector's error if one is behind it (through pg8000's and
    SQLAlchemy's wrapping), else the database's own words, else the exception.
    """
    seen = set()
    chain = []
    e = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__ or getattr(e, "orig", None)
    for e in chain:
        if isinstance(e, ConnectorError):
            return _status(e), f"connector error ({e.case}): {e.message}"
    for e in chain:
        if isinstance(e, pg8000.dbapi.DatabaseError) and e.args and isinstance(e.args[0], dict):
            fields = e.args[0]
            return 502, "database error {}: {}".format(
                fields.get("C", "?"), fields.get("M", "unknown")
            )
    for e in chain:
        if isinstance(e, pg8000.dbapi.InterfaceError):
            return 502, f"database connection error: {e}"
    return 500, f"{type(exc).__name__}: {exc}"


def _status(e):
    """The HTTP status for a connector error: the app's configuration (500),
    Google or the instance misbehaving or unreachable (502), a wait the caller
    may retry (503), a bound that ran out (504)."""
    if e.case in ("invalid-instance-name", "invalid-config", "credentials", "unsupported",
                  "ip-type-not-available", "region-mismatch"):
        return 500
    if e.case in ("rate-limited", "quota-exceeded"):
        return 503
    if e.case == "timeout":
        return 504
    return 502
