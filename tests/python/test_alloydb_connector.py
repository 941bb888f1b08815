"""Google's official AlloyDB Python connector as a client of the emulator's AlloyDB half.

google-cloud-alloydb-connector (with pg8000) calls the AlloyDB Admin API (v1beta
connectionInfo and generateClientCertificate), dials the instance's server-side proxy on
<ip>:5433 with TLS 1.3 and a client chain, verifies the proxy's leaf against the address it
dialed (check_hostname on the IP, or the PSC DNS name), runs the metadata exchange (a
length-prefixed protobuf carrying an OAuth2 token and the auth type) and hands the socket
to pg8000. Here the emulator binary ($GCPDB_EMULATOR) stands in for Google in front of the
test PostgreSQL ($GCPDB_TEST_PG: role app with password app-password, IAM roles
connector-sa@emulator-project.iam and dev-user@example.com, table messages).

How the connector is pointed at the emulator: the connector only speaks gRPC to the Admin
API (AlloyDBClient builds a v1beta AlloyDBAdminClient with transport="grpc" for pg8000) and
takes no client of its own choosing through its public API. Its AlloyDBClient does take one
(`client=`), so each test builds google-cloud-alloydb's v1beta AlloyDBAdminClient with
transport="rest" and api_endpoint = the emulator's http:// URL, wraps it in the connector's
own AlloyDBClient, and sets it as Connector._client before the first connect (the connector
creates its client lazily only when that attribute is None; its own unit tests set it the
same way). Everything else (refresh, TLS, metadata exchange, driver) is the connector's.

Covered: password logins with each credential type (service-account key, authorized_user,
metadata server); the public, private and PSC addresses (the PSC DNS name mapped in
/etc/hosts: root, as in CI); automatic IAM database authentication (AUTO_IAM in the
metadata exchange) for each credential type, and the refusal of another database user;
the connector's errors for a missing IP type and an unknown instance (the Admin API's 404
through google-api-core), a metadata exchange the proxy refuses (a token without an
AlloyDB scope) and one a test makes fail.

Run with scripts/test (it builds the emulator, starts PostgreSQL and sets $GCPDB_EMULATOR
and $GCPDB_TEST_PG).
"""

import contextlib
import importlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request

import google.api_core.exceptions
import google.auth.credentials
import google.cloud.alloydb_v1beta as v1beta
import pg8000.dbapi
import pytest
from google.api_core.client_options import ClientOptions
from google.cloud.alloydbconnector import Connector
from google.cloud.alloydbconnector.client import AlloyDBClient
from google.cloud.alloydbconnector.exceptions import IPTypeNotFoundError
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

# As in test_python_connector.py: google.auth.compute_engine is imported only once the
# fixture has set GCE_METADATA_HOST.

CLUSTER = "projects/alloydb-py/locations/us-central1/clusters/py-cluster"
PRIMARY = f"{CLUSTER}/instances/primary"  # public IP, private IP and PSC
READ_POOL = f"{CLUSTER}/instances/read-pool"  # private IP only (AlloyDB's default)
INSTANCE_SPECS = {
    PRIMARY: "backend={pg},public-ip=auto,psc=true",
    READ_POOL: "backend={pg}",
}

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SQLSERVICE_ADMIN_SCOPE = "https://www.googleapis.com/auth/sqlservice.admin"

MESSAGES = [("hello from Cloud SQL",), ("through a wasm component",)]
READY_TIMEOUT_SECS = 60

# The database user each kind of credentials is under AUTO_IAM (AlloyDB, like Cloud SQL,
# drops .gserviceaccount.com from a service account's email).
IAM_USERS = {
    "service_account": "connector-sa@emulator-project.iam",
    "authorized_user": "dev-user@example.com",
    "metadata": "connector-sa@emulator-project.iam",
}
# Which emulator token counter each kind of credentials drives.
GRANTS = {
    "service_account": "jwt-bearer",
    "authorized_user": "refresh_token",
    "metadata": "metadata",
}
# MetadataExchangeRequest.AuthType, as the emulator counts them.
DB_NATIVE, AUTO_IAM = "DB_NATIVE", "AUTO_IAM"


def required_env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run the Python tests with scripts/test")
    return value


class Emulator:
    def __init__(self, ready):
        self.ready = ready

    @property
    def endpoint(self):
        return self.ready["alloydb_admin_endpoint"]

    def instance(self, uri):
        return next(i for i in self.ready["instances"] if i["name"] == uri)

    def control(self, path, body=None):
        """GET (body None) or POST a JSON body to the emulator's control endpoint."""
        url = self.ready["control_endpoint"] + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)

    def calls(self):
        return self.control("/calls")

    def set_mdx(self, uri, mode, message=None):
        body = {"mode": mode}
        if message is not None:
            body["message"] = message
        self.control(f"/instances/{urllib.parse.quote(uri, safe='')}/mdx", body)


@pytest.fixture(scope="session")
def emulator():
    binary = required_env("GCPDB_EMULATOR")
    pg = required_env("GCPDB_TEST_PG")
    with tempfile.TemporaryDirectory(prefix="gcpdb-alloydb-py-") as state_dir:
        args = [binary, "--state-dir", state_dir]
        for name, spec in INSTANCE_SPECS.items():
            args += ["--instance", f"{name},{spec.format(pg=pg)}"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        lines = queue.Queue()

        def read_stdout():
            # The first line is the ready line; the rest is drained so the emulator
            # never blocks on its stdout.
            for line in proc.stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=read_stdout, daemon=True).start()
        saved_env = {k: os.environ.get(k) for k in ("GCE_METADATA_HOST", "GCE_METADATA_IP")}
        try:
            try:
                line = lines.get(timeout=READY_TIMEOUT_SECS)
            except queue.Empty:
                raise RuntimeError(f"{binary}: no ready line in {READY_TIMEOUT_SECS} s")
            if not line:
                raise RuntimeError(f"{binary} exited ({proc.wait()}) before its ready line")
            ready = json.loads(line)
            kinds = {i["name"]: i["kind"] for i in ready["instances"]}
            assert kinds == {PRIMARY: "alloydb", READ_POOL: "alloydb"}, kinds
            os.environ["GCE_METADATA_HOST"] = ready["metadata_host"]
            os.environ["GCE_METADATA_IP"] = ready["metadata_host"]
            metadata = sys.modules.get("google.auth.compute_engine._metadata")
            if metadata is not None:  # imported already: make it read the variables again
                importlib.reload(metadata)
            yield Emulator(ready)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def make_credentials(kind, emulator):
    """Fresh google-auth credentials of one kind, unscoped where google-auth lets the
    connector choose (it scopes the Admin API's to cloud-platform and the metadata
    exchange's to alloydb.login)."""
    ready = emulator.ready
    if kind == "service_account":
        return service_account.Credentials.from_service_account_file(
            ready["service_account_file"]
        )
    if kind == "authorized_user":
        # google-auth ignores an authorized_user file's token_uri (always Google's).
        return user_credentials.Credentials.from_authorized_user_file(
            ready["authorized_user_file"], scopes=[CLOUD_PLATFORM_SCOPE]
        ).with_token_uri(ready["token_endpoint"])
    if kind == "metadata":
        from google.auth import compute_engine  # after the fixture set GCE_METADATA_HOST

        return compute_engine.Credentials()
    raise ValueError(kind)


def rest_alloydb_client(emulator, credentials):
    """The connector's own AlloyDBClient (its user agent, the metadata exchange on as for
    pg8000) around google-cloud-alloydb's v1beta Admin API client over REST, at the
    emulator; the credentials scoped as the connector scopes its own for the Admin API."""
    scoped = google.auth.credentials.with_scopes_if_required(
        credentials, scopes=[CLOUD_PLATFORM_SCOPE]
    )
    admin = v1beta.AlloyDBAdminClient(
        credentials=scoped,
        transport="rest",
        client_options=ClientOptions(api_endpoint=emulator.endpoint),
    )
    return AlloyDBClient(emulator.endpoint, None, scoped, client=admin, driver="pg8000")


@contextlib.contextmanager
def connector(emulator, credentials, **kwargs):
    c = Connector(
        credentials=credentials,
        alloydb_api_endpoint=emulator.endpoint,
        refresh_strategy="lazy",
        **kwargs,
    )
    # See the module's docstring.
    c._client = rest_alloydb_client(emulator, credentials)
    try:
        yield c
    finally:
        c.close()


def current_user_and_rows(conn):
    try:
        cur = conn.cursor()
        cur.execute("SELECT current_user")
        user = cur.fetchone()[0]
        # The seeded rows: other suites add their own.
        cur.execute("SELECT body FROM messages ORDER BY id LIMIT 2")
        return user, [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def delta(before, after, counter, key):
    return after[counter].get(key, 0) - before[counter].get(key, 0)


def new_auth_types(before, after, uri):
    """The auth types of the metadata exchanges at uri's proxy between two snapshots."""
    seen = before["alloydbMdxAuthType"].get(uri, [])
    return after["alloydbMdxAuthType"].get(uri, [])[len(seen) :]


@pytest.mark.parametrize("kind", list(GRANTS))
def test_password_auth_query(emulator, kind):
    before = emulator.calls()
    with connector(emulator, make_credentials(kind, emulator)) as c:
        conn = c.connect(PRIMARY, "pg8000", user="app", password="app-password", db="postgres")
        assert current_user_and_rows(conn) == ("app", MESSAGES)
    after = emulator.calls()
    assert delta(before, after, "connectionInfo", PRIMARY) == 1
    assert delta(before, after, "generateClientCertificate", CLUSTER) == 1
    assert new_auth_types(before, after, PRIMARY) == [DB_NATIVE]
    # The default IP type is PRIVATE: the connection went to the private address.
    private_ip = emulator.instance(PRIMARY)["private_ip"]
    assert delta(before, after, "proxyConnections", private_ip) == 1
    grants = {g: after["token"][g] - before["token"][g] for g in after["token"]}
    assert grants[GRANTS[kind]] >= 1, grants
    assert all(v == 0 for g, v in grants.items() if g != GRANTS[kind]), grants


@contextlib.contextmanager
def hosts_entry(ip, name):
    """Maps name to ip in /etc/hosts for the duration (root, as in CI): the PSC DNS name
    must resolve without a DNS server."""
    line = f"{ip} {name} # gcp-db-connector alloydb test {os.getpid()}\n"
    with open("/etc/hosts", "a") as f:
        f.write(line)
    try:
        yield
    finally:
        with open("/etc/hosts") as f:
            kept = [l for l in f if l != line]
        with open("/etc/hosts", "w") as f:
            f.writelines(kept)


@pytest.mark.parametrize("ip_type", ["PUBLIC", "PRIVATE", "PSC"])
def test_ip_type_dials_its_address(emulator, ip_type):
    info = emulator.instance(PRIMARY)
    address = {"PUBLIC": "public_ip", "PRIVATE": "private_ip", "PSC": "psc_ip"}[ip_type]
    ip = info[address]
    before = emulator.calls()["proxyConnections"].get(ip, 0)
    hosts = contextlib.nullcontext()
    if ip_type == "PSC":
        assert info["psc_dns_name"].endswith(".alloydb-psc.goog."), info
        # The connector strips the trailing dot, dials the name and checks the proxy's
        # certificate against it.
        hosts = hosts_entry(ip, info["psc_dns_name"].rstrip("."))
    with hosts, connector(emulator, make_credentials("service_account", emulator)) as c:
        conn = c.connect(
            PRIMARY, "pg8000", user="app", password="app-password", db="postgres", ip_type=ip_type
        )
        assert current_user_and_rows(conn) == ("app", MESSAGES)
    assert emulator.calls()["proxyConnections"][ip] == before + 1


@pytest.mark.parametrize("kind", list(IAM_USERS))
def test_automatic_iam_auth(emulator, kind):
    user = IAM_USERS[kind]
    before = emulator.calls()
    with connector(emulator, make_credentials(kind, emulator), enable_iam_auth=True) as c:
        conn = c.connect(PRIMARY, "pg8000", user=user, db="postgres", ip_type="PUBLIC")
        try:
            cur = conn.cursor()
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == user
        finally:
            conn.close()
        # The token in the metadata exchange is the principal's: another user is refused.
        with pytest.raises(pg8000.dbapi.DatabaseError) as err:
            c.connect(PRIMARY, "pg8000", user="app", db="postgres", ip_type="PUBLIC")
    assert 'AlloyDB IAM authentication failed for user "app"' in str(err.value)
    after = emulator.calls()
    assert new_auth_types(before, after, PRIMARY) == [AUTO_IAM, AUTO_IAM]


def test_ip_type_the_instance_lacks(emulator):
    with connector(emulator, make_credentials("service_account", emulator)) as c:
        with pytest.raises(IPTypeNotFoundError) as err:
            c.connect(
                READ_POOL, "pg8000", user="app", password="app-password", db="postgres",
                ip_type="PUBLIC",
            )
    assert str(err.value) == (
        "AlloyDB instance does not have an IP addresses matching type: 'PUBLIC'"
    )


def test_unknown_instance(emulator):
    unknown = f"{CLUSTER}/instances/no-such-instance"
    with connector(emulator, make_credentials("service_account", emulator)) as c:
        with pytest.raises(google.api_core.exceptions.NotFound) as err:
            c.connect(unknown, "pg8000", user="app", password="app-password", db="postgres")
    assert err.value.code == 404
    # google-api-core puts the method and URL first.
    assert err.value.message.endswith(f"/connectionInfo?%24alt=json%3Benum-encoding%3Dint: "
                                      f"Resource '{unknown}' was not found"), err.value.message


def test_metadata_exchange_refuses_a_token_without_an_alloydb_scope(emulator):
    """The database token comes from db_credentials: one scoped to Cloud SQL only is
    refused by the proxy, and the connector reports the proxy's message."""
    creds = make_credentials("service_account", emulator)
    db_creds = creds.with_scopes([SQLSERVICE_ADMIN_SCOPE])
    with connector(emulator, creds, db_credentials=db_creds) as c:
        with pytest.raises(ValueError) as err:
            c.connect(PRIMARY, "pg8000", user="app", password="app-password", db="postgres")
    message = str(err.value)
    assert message.startswith("Metadata Exchange request has failed with error: "), message
    assert "lacks the scope https://www.googleapis.com/auth/alloydb.login" in message


def test_metadata_exchange_error_is_reported(emulator):
    emulator.set_mdx(PRIMARY, "error", "instance is being maintained")
    try:
        with connector(emulator, make_credentials("service_account", emulator)) as c:
            with pytest.raises(ValueError) as err:
                c.connect(PRIMARY, "pg8000", user="app", password="app-password", db="postgres")
    finally:
        emulator.set_mdx(PRIMARY, "normal")
    assert str(err.value) == (
        "Metadata Exchange request has failed with error: instance is being maintained"
    )
