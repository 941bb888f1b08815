"""Google's official Cloud SQL Python connector as a second client of the emulator.

The same emulator binary the Rust end-to-end tests use (Admin API v1beta4, OAuth2
token endpoint, metadata server, TLS server-side proxies on <ip>:3307) sits in front
of the test PostgreSQL that scripts/test starts ($GCPDB_TEST_PG: role app with
password app-password, table messages with two rows). If cloud-sql-python-connector
+ pg8000 connect through it, the emulator speaks Google's protocol the way Google's
own client expects it, not only the way our connector does.

Covered: password authentication with each credential type (service-account key
file, authorized_user file, metadata server) on a legacy-CA and a CAS instance (one
of them in a domain-scoped project), and the connector's errors for a missing IP
type, a private IP, a PSC DNS name (mapped in /etc/hosts: root, as in CI), a
region mismatch and an unknown instance; automatic IAM database
authentication (enable_iam_auth=True) with each credential type: the principal
logs in without a password, and another database user is refused the way Cloud
SQL refuses it.

MySQL: a MYSQL_8_0 instance in front of the test MariaDB ($GCPDB_TEST_MYSQL: user app
with password app-password, passwordless IAM users connector-sa and dev-user, database
appdb with the same table), through PyMySQL: password login with each credential type,
and automatic IAM authentication (the principal's MySQL user, the email up to the @,
logs in without a password; another user gets MySQL's access-denied error).

Identity: google-auth (google.auth.load_credentials_from_file, then refresh) takes the
emulator's impersonated_service_account files (a service-account key source, and an
authorized_user source through a delegate) and external_account files (a file source
impersonating the target, and a URL source with STS client authentication) and gets its
tokens from the emulator's STS and IAM Credentials; the Python connector connects through
each (password login) and, for the three that impersonate, logs in as the target service
account with automatic IAM authentication (target-sa@emulator-project.iam, MySQL
target-sa). A rewritten subject token is read again: another subject may not impersonate,
an expired one is refused by STS.

One deviation, google-auth's own: for impersonated_service_account files it takes only the
target's email from service_account_impersonation_url and always calls
https://iamcredentials.googleapis.com (and an authorized_user source always refreshes at
https://oauth2.googleapis.com/token). Those tests build the same credentials through
google-auth's public constructor with iam_endpoint_override set to the file's URL, as
google-auth itself does for external_account impersonation.

Run with scripts/test (it builds the emulator, starts PostgreSQL and MariaDB and sets
$GCPDB_EMULATOR, $GCPDB_TEST_PG and $GCPDB_TEST_MYSQL).
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
import urllib.request
import warnings

import aiohttp
import google.auth
import google.auth.exceptions
import google.auth.transport.requests
import pytest
from google.auth import identity_pool
from google.auth import impersonated_credentials
from google.cloud.sql.connector import Connector
from google.cloud.sql.connector.exceptions import CloudSQLIPTypeError
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

# Do NOT import google.auth.compute_engine here: google-auth reads
# GCE_METADATA_HOST once, when google.auth.compute_engine._metadata is imported,
# and the emulator's metadata port is only known once it runs.

LEGACY = "example.com:cloudsql-py:us-central1:legacy-pg"  # domain-scoped project
CAS = "cloudsql-py:europe-west1:cas-pg"
INSTANCE_SPECS = {
    LEGACY: "backend={pg},ca=legacy",
    CAS: "backend={pg},ca=cas,private-ip=auto,psc=true",
}
MYSQL = "cloudsql-py:us-central1:mysql"
MYSQL_LEGACY = "example.com:cloudsql-py:us-central1:mysql-legacy"
INSTANCE_SPECS[MYSQL] = "backend={mysql},version=MYSQL_8_0"
INSTANCE_SPECS[MYSQL_LEGACY] = "backend={mysql},version=MYSQL_8_0,ca=legacy"
INSTANCES = pytest.mark.parametrize("instance", [LEGACY, CAS], ids=["legacy", "cas"])
MYSQL_INSTANCES = pytest.mark.parametrize("instance", [MYSQL_LEGACY, MYSQL], ids=["legacy", "cas"])

ADMIN_SCOPE = "https://www.googleapis.com/auth/sqlservice.admin"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

MESSAGES = [("hello from Cloud SQL",), ("through a wasm component",)]
READY_TIMEOUT_SECS = 60


def required_env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run the Python tests with scripts/test")
    return value


def split_name(connection_name):
    """(project, region, instance); the project may hold one colon (domain scope)."""
    project, region, instance = connection_name.rsplit(":", 2)
    return project, region, instance


class Emulator:
    def __init__(self, ready):
        self.ready = ready

    @property
    def admin_endpoint(self):
        return self.ready["admin_endpoint"]

    def calls(self):
        """The emulator's Admin API and token counters."""
        url = self.ready["control_endpoint"] + "/calls"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)

    def rewrite_subject_token(self, body):
        """A new subject token from the emulator's identity provider (file and URL)."""
        req = urllib.request.Request(
            self.ready["control_endpoint"] + "/subject-token",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200


@pytest.fixture(scope="session")
def emulator():
    binary = required_env("GCPDB_EMULATOR")
    pg = required_env("GCPDB_TEST_PG")
    mysql = required_env("GCPDB_TEST_MYSQL")
    with tempfile.TemporaryDirectory(prefix="gcpdb-py-") as state_dir:
        args = [binary, "--state-dir", state_dir]
        for name, spec in INSTANCE_SPECS.items():
            args += ["--instance", f"{name},{spec.format(pg=pg, mysql=mysql)}"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        lines = queue.Queue()

        def read_stdout():
            # The first line is the ready line; the rest is drained so the
            # emulator never blocks on (or loses) its stdout.
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
            got = {i["name"]: i["ca_mode"] for i in ready["instances"]}
            assert got == {
                LEGACY: "legacy",
                CAS: "cas",
                MYSQL: "cas",
                MYSQL_LEGACY: "legacy",
            }, got

            # google.auth.compute_engine: GCE_METADATA_HOST for requests,
            # GCE_METADATA_IP for the GCE ping.
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
    """Fresh google-auth credentials (no token yet) of one kind, all pointing at the emulator."""
    ready = emulator.ready
    if kind == "service_account":
        # The key file's token_uri is the emulator's token endpoint.
        return service_account.Credentials.from_service_account_file(
            ready["service_account_file"], scopes=[ADMIN_SCOPE]
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


# Which emulator token counter each kind of credentials must drive.
GRANTS = {
    "service_account": "jwt-bearer",
    "authorized_user": "refresh_token",
    "metadata": "metadata",
}


@contextlib.contextmanager
def connector(emulator, credentials):
    c = Connector(
        sqladmin_api_endpoint=emulator.admin_endpoint,
        credentials=credentials,
        refresh_strategy="lazy",
    )
    try:
        yield c
    finally:
        c.close()


def api_count(calls, method, connection_name):
    project, _, instance = split_name(connection_name)
    return calls[method].get(f"{project}:{instance}", 0)


@INSTANCES
@pytest.mark.parametrize("kind", list(GRANTS))
def test_password_auth_query(emulator, instance, kind):
    before = emulator.calls()
    with connector(emulator, make_credentials(kind, emulator)) as c:
        conn = c.connect(instance, "pg8000", user="app", password="app-password", db="postgres")
        try:
            cur = conn.cursor()
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == "app"
            # The seeded rows: other suites (tests/serverless.rs) add their own.
            cur.execute("SELECT body FROM messages ORDER BY id LIMIT 2")
            assert [tuple(r) for r in cur.fetchall()] == MESSAGES
        finally:
            conn.close()
    after = emulator.calls()

    # The token came from the grant of these credentials, and only from it.
    token_delta = {g: after["token"][g] - before["token"][g] for g in after["token"]}
    assert token_delta[GRANTS[kind]] >= 1, token_delta
    assert all(v == 0 for g, v in token_delta.items() if g != GRANTS[kind]), token_delta
    for method in ("connectSettings", "generateEphemeralCert"):
        assert api_count(after, method, instance) > api_count(before, method, instance), method


# The database user each kind of credentials is, under IAM authentication
# (Cloud SQL drops .gserviceaccount.com from service accounts).
IAM_USERS = {
    "service_account": "connector-sa@emulator-project.iam",
    "authorized_user": "dev-user@example.com",
    "metadata": "connector-sa@emulator-project.iam",
}


@INSTANCES
@pytest.mark.parametrize("kind", list(IAM_USERS))
def test_automatic_iam_auth(emulator, instance, kind):
    user = IAM_USERS[kind]
    with connector(emulator, make_credentials(kind, emulator)) as c:
        conn = c.connect(instance, "pg8000", user=user, db="postgres", enable_iam_auth=True)
        try:
            cur = conn.cursor()
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == user
        finally:
            conn.close()

        # The certificate carries the principal: another user is refused.
        import pg8000.dbapi

        with pytest.raises(pg8000.dbapi.DatabaseError) as err:
            c.connect(instance, "pg8000", user="app", db="postgres", enable_iam_auth=True)
        kind_word = "user" if kind == "authorized_user" else "service account"
        assert f'Cloud SQL IAM {kind_word} authentication failed for user "app"' in str(err.value)


def test_private_ip_type_dials_the_private_address(emulator):
    private_ip = next(i["private_ip"] for i in emulator.ready["instances"] if i["name"] == CAS)
    before = emulator.calls()["proxyConnections"].get(private_ip, 0)
    with connector(emulator, make_credentials("service_account", emulator)) as c:
        conn = c.connect(
            CAS, "pg8000", user="app", password="app-password", db="postgres", ip_type="PRIVATE"
        )
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            assert cur.fetchone()[0] == 1
        finally:
            conn.close()
    assert emulator.calls()["proxyConnections"][private_ip] == before + 1


@contextlib.contextmanager
def hosts_entry(ip, name):
    """Maps name to ip in /etc/hosts for the duration (root, as in CI): the PSC
    DNS name must resolve without a DNS server."""
    line = f"{ip} {name} # gcp-db-connector test {os.getpid()}\n"
    with open("/etc/hosts", "a") as f:
        f.write(line)
    try:
        yield
    finally:
        with open("/etc/hosts") as f:
            kept = [l for l in f if l != line]
        with open("/etc/hosts", "w") as f:
            f.writelines(kept)


def test_psc_ip_type_dials_the_psc_dns_name(emulator):
    info = next(i for i in emulator.ready["instances"] if i["name"] == CAS)
    psc_ip, psc_name = info["psc_ip"], info["psc_dns_name"]
    assert psc_name.endswith(".sql-psc.goog.")
    before = emulator.calls()["proxyConnections"].get(psc_ip, 0)
    with hosts_entry(psc_ip, psc_name.rstrip(".")):
        with connector(emulator, make_credentials("service_account", emulator)) as c:
            conn = c.connect(
                CAS, "pg8000", user="app", password="app-password", db="postgres", ip_type="PSC"
            )
            try:
                cur = conn.cursor()
                cur.execute("SELECT 'psc'")
                assert cur.fetchone()[0] == "psc"
            finally:
                conn.close()
    assert emulator.calls()["proxyConnections"][psc_ip] == before + 1


def test_private_ip_type_without_private_ip(emulator):
    creds = make_credentials("service_account", emulator)
    with connector(emulator, creds) as c:
        with pytest.raises(CloudSQLIPTypeError) as err:
            c.connect(
                LEGACY,
                "pg8000",
                user="app",
                password="app-password",
                db="postgres",
                ip_type="PRIVATE",
            )
    assert str(err.value) == (
        "Cloud SQL instance does not have any IP addresses matching preference: PRIVATE"
    )


@INSTANCES
def test_region_mismatch(emulator, instance):
    project, region, name = split_name(instance)
    wrong = f"{project}:asia-east1:{name}"
    creds = make_credentials("service_account", emulator)
    with connector(emulator, creds) as c:
        with pytest.raises(ValueError) as err:
            c.connect(wrong, "pg8000", user="app", password="app-password", db="postgres")
    assert str(err.value) == (
        f"[{wrong}]: Provided region was mismatched - "
        f"got region asia-east1, expected {region}."
    )


@INSTANCES
def test_unknown_instance(emulator, instance):
    project, region, _ = split_name(instance)
    unknown = f"{project}:{region}:no-such-instance"
    creds = make_credentials("service_account", emulator)
    with connector(emulator, creds) as c:
        with pytest.raises(aiohttp.ClientResponseError) as err:
            c.connect(unknown, "pg8000", user="app", password="app-password", db="postgres")
    assert err.value.status == 404
    assert err.value.message == "The Cloud SQL instance does not exist."


# The MySQL user each kind of credentials is, under IAM authentication
# (Cloud SQL for MySQL takes the email up to the @).
MYSQL_IAM_USERS = {
    "service_account": "connector-sa",
    "authorized_user": "dev-user",
    "metadata": "connector-sa",
}


def mysql_user_and_rows(conn):
    """The logged-in user (without its host) and the messages, through PyMySQL."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)")
            user = cur.fetchone()[0]
            cur.execute("SELECT body FROM messages ORDER BY id")
            rows = [tuple(r) for r in cur.fetchall()]
        return user, rows
    finally:
        conn.close()


@MYSQL_INSTANCES
@pytest.mark.parametrize("kind", list(GRANTS))
def test_mysql_password_auth_query(emulator, instance, kind):
    before = emulator.calls()
    with connector(emulator, make_credentials(kind, emulator)) as c:
        conn = c.connect(instance, "pymysql", user="app", password="app-password", db="appdb")
        assert mysql_user_and_rows(conn) == ("app", MESSAGES)
    after = emulator.calls()
    for method in ("connectSettings", "generateEphemeralCert"):
        assert api_count(after, method, instance) > api_count(before, method, instance), method


@MYSQL_INSTANCES
@pytest.mark.parametrize("kind", list(MYSQL_IAM_USERS))
def test_mysql_automatic_iam_auth(emulator, instance, kind):
    import pymysql

    user = MYSQL_IAM_USERS[kind]
    with connector(emulator, make_credentials(kind, emulator)) as c:
        conn = c.connect(instance, "pymysql", user=user, db="appdb", enable_iam_auth=True)
        assert mysql_user_and_rows(conn) == (user, MESSAGES)

        # The certificate carries the principal: another user is refused.
        with pytest.raises(pymysql.err.OperationalError) as err:
            c.connect(instance, "pymysql", user="app", db="appdb", enable_iam_auth=True)
        code, message = err.value.args
        assert code == 1045, err.value
        assert message.startswith("Access denied for user 'app'@"), message


# --- Identity: impersonation and workload identity federation through google-auth.

TARGET_SA = "target-sa@emulator-project.iam.gserviceaccount.com"
DELEGATE_SA = "delegate-sa@emulator-project.iam.gserviceaccount.com"
IDENTITY_FILES = {
    "impersonated_sa": "impersonated_service_account_file",
    "impersonated_user": "impersonated_user_file",
    "external_file": "external_account_file",
    "external_url": "external_account_url_file",
}
# The kinds that end in generateAccessToken of the target service account.
IMPERSONATING = ["impersonated_sa", "impersonated_user", "external_file"]


def load_identity_credentials(kind, emulator):
    """google-auth credentials from one of the emulator's identity files."""
    path = emulator.ready[IDENTITY_FILES[kind]]
    # The generic loader on purpose: it picks the class by "type", as ADC does (and warns
    # that it does). Without scopes: with them, google-auth would ask Cloud Resource
    # Manager (Google itself) for an external account's project id.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The load_credentials_from_file method is deprecated")
        creds, _ = google.auth.load_credentials_from_file(path)
    with open(path) as f:
        info = json.load(f)
    if kind.startswith("external"):
        assert isinstance(creds, identity_pool.Credentials), type(creds)
        assert creds.universe_domain == "googleapis.com"
        return creds
    # impersonated_service_account: google-auth read the target and the source; build the
    # same credentials through its public constructor, with the file's URL as the IAM
    # endpoint (see the module's docstring).
    assert isinstance(creds, impersonated_credentials.Credentials), type(creds)
    assert creds.service_account_email == TARGET_SA
    source_info = info["source_credentials"]
    if source_info["type"] == "service_account":
        source = service_account.Credentials.from_service_account_info(source_info)
    else:
        source = user_credentials.Credentials.from_authorized_user_info(
            source_info
        ).with_token_uri(emulator.ready["token_endpoint"])
    return impersonated_credentials.Credentials(
        source_credentials=source,
        target_principal=creds.service_account_email,
        target_scopes=None,
        delegates=info["delegates"],
        iam_endpoint_override=info["service_account_impersonation_url"],
    )


def counter_deltas(before, after):
    """What the emulator counted between two snapshots: token grants, STS exchanges,
    generateAccessToken calls per service account."""
    grants = {g: after["token"][g] - before["token"][g] for g in after["token"]}
    sts = sum(after["sts"].values()) - sum(before["sts"].values())
    gat = {
        sa: n - before["generateAccessToken"].get(sa, 0)
        for sa, n in after["generateAccessToken"].items()
        if n != before["generateAccessToken"].get(sa, 0)
    }
    return grants, sts, gat


# Per kind, what one refresh costs: the token grant of its source (None: none, the
# source is STS), the STS exchanges, the generateAccessToken calls per service account.
IDENTITY_FLOWS = {
    "impersonated_sa": ("jwt-bearer", 0, {TARGET_SA: 1}),
    "impersonated_user": ("refresh_token", 0, {TARGET_SA: 1}),
    "external_file": (None, 1, {TARGET_SA: 1}),
    "external_url": (None, 1, {}),
}


@pytest.mark.parametrize("kind", list(IDENTITY_FILES))
def test_google_auth_refreshes_identity_files(emulator, kind):
    creds = load_identity_credentials(kind, emulator).with_scopes([CLOUD_PLATFORM_SCOPE])
    before = emulator.calls()
    creds.refresh(google.auth.transport.requests.Request())
    after = emulator.calls()
    assert creds.token.startswith("ya29.emu-"), creds.token[:9]
    assert creds.valid
    grant, sts, impersonations = IDENTITY_FLOWS[kind]
    grants, sts_delta, gat = counter_deltas(before, after)
    assert grants == {g: (1 if g == grant else 0) for g in grants}, grants
    assert sts_delta == sts
    assert gat == impersonations
    # The token is the emulator's: its Admin API takes it.
    project, _, instance = split_name(CAS)
    req = urllib.request.Request(
        f"{emulator.admin_endpoint}/sql/v1beta4/projects/{project}/instances/{instance}"
        "/connectSettings",
        headers={"Authorization": f"Bearer {creds.token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.load(resp)["kind"] == "sql#connectSettings"


@pytest.mark.parametrize("kind", list(IDENTITY_FILES))
def test_identity_password_auth_query(emulator, kind):
    with connector(emulator, load_identity_credentials(kind, emulator)) as c:
        conn = c.connect(CAS, "pg8000", user="app", password="app-password", db="postgres")
        try:
            cur = conn.cursor()
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == "app"
        finally:
            conn.close()


@INSTANCES
@pytest.mark.parametrize("kind", IMPERSONATING)
def test_identity_automatic_iam_auth(emulator, instance, kind):
    """The impersonated token stands for the target: its database user logs in."""
    import pg8000.dbapi

    user = "target-sa@emulator-project.iam"
    with connector(emulator, load_identity_credentials(kind, emulator)) as c:
        conn = c.connect(instance, "pg8000", user=user, db="postgres", enable_iam_auth=True)
        try:
            cur = conn.cursor()
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == user
        finally:
            conn.close()
        # Not the source's user: the certificate carries the target.
        source_user = "connector-sa@emulator-project.iam"
        with pytest.raises(pg8000.dbapi.DatabaseError) as err:
            c.connect(instance, "pg8000", user=source_user, db="postgres", enable_iam_auth=True)
        assert (
            f'Cloud SQL IAM service account authentication failed for user "{source_user}"'
            in str(err.value)
        )


@pytest.mark.parametrize("kind", IMPERSONATING)
def test_identity_mysql_automatic_iam_auth(emulator, kind):
    with connector(emulator, load_identity_credentials(kind, emulator)) as c:
        conn = c.connect(MYSQL, "pymysql", user="target-sa", db="appdb", enable_iam_auth=True)
        assert mysql_user_and_rows(conn) == ("target-sa", MESSAGES)


def test_external_account_reads_the_subject_token_again(emulator):
    """google-auth reads the file or URL at each exchange: a rewritten token counts."""
    request = google.auth.transport.requests.Request()

    def fresh(kind):
        return load_identity_credentials(kind, emulator).with_scopes([CLOUD_PLATFORM_SCOPE])

    try:
        # Another subject: STS exchanges it, but the policy lets only wasm-workload
        # impersonate the target.
        emulator.rewrite_subject_token({"sub": "other-workload"})
        url_creds = fresh("external_url")
        url_creds.refresh(request)
        assert url_creds.valid
        with pytest.raises(google.auth.exceptions.RefreshError) as err:
            fresh("external_file").refresh(request)
        assert "PERMISSION_DENIED" in str(err.value), err.value
        assert "iam.serviceAccounts.getAccessToken" in str(err.value), err.value

        # Expired: STS refuses it, for both sources.
        emulator.rewrite_subject_token({"mode": "expired"})
        for kind in ("external_url", "external_file"):
            with pytest.raises(google.auth.exceptions.OAuthError) as err:
                fresh(kind).refresh(request)
            assert "invalid_grant" in str(err.value), err.value
            assert "is stale to sign-in" in str(err.value), err.value
    finally:
        emulator.rewrite_subject_token({})
    creds = fresh("external_file")
    creds.refresh(request)
    assert creds.valid
