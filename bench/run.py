"""The benchmark behind scripts/bench: our connector and Google's Python connector,
on the same emulator and the same PostgreSQL, in one run.

scripts/bench builds everything, starts PostgreSQL and runs this with the venv's
Python. It starts the emulator with three Cloud SQL instances in front of that
PostgreSQL (all TLS 1.3 cipher suites; only AES-128-GCM; only ChaCha20-Poly1305),
then:
  - runs `gcp-db-host bench` (the connector component in the embedded wasmtime
    host: cold connects in fresh instances, warm connects, fresh instances with
    the store warm, a 100 MB COPY through the connector and direct);
  - times cloud-sql-python-connector + pg8000 doing the same cold and warm
    connects (login + SELECT 1 each) with the same service-account key; these
    two run in alternating rounds (--rounds), so a drift in the machine's speed
    shows on both sides of a ratio;
  - measures the peak memory of one connect in a process of each;
  - serves examples/messages-http with the wasmtime CLI (`wasmtime serve`, a fresh
    instance per request, the connector's cache in a directory, as
    tests/wasmtime_cli.rs does) and times `GET /`: 1000 requests with the store
    warm; requests that refresh an expired certificate with the stored key (a
    second emulator issuing 200 s certificates); the first request after a
    deployment (a new cache directory and server), with and without `GET /warmup`;
  - serves examples/messages-http with the project's host (`gcp-db-host serve`, a
    fresh instance per request, the connector's cache in the host's wasi:keyvalue
    store) and times 1000 `GET /` with the store warm, once with the store in the
    host's memory and once on Redis (`--redis`, the server scripts/bench starts);
  - serves examples/python-messages (Flask + SQLAlchemy + pg8000, componentize-py)
    composed with the connector the same way, and times its `GET /` with the store
    warm, and a `GET` of a path it has no route for (instantiation and Flask only);
and prints one table (median, p90, max), written to BENCHMARKS.md with --write.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PROJECT = "bench"
REGION = "us-central1"
MAIN = f"{PROJECT}:{REGION}:pg"
AES = f"{PROJECT}:{REGION}:pg-aes128gcm"
CHACHA = f"{PROJECT}:{REGION}:pg-chacha20"
SPECS = {
    MAIN: "backend={pg}",
    AES: "backend={pg},tls-suite=aes128gcm",
    CHACHA: "backend={pg},tls-suite=chacha20poly1305",
}
USER, PASSWORD, DATABASE = "app", "app-password", "postgres"
ADMIN_SCOPE = "https://www.googleapis.com/auth/sqlservice.admin"
# On a second emulator whose certificates last SHORT_CERT_SECS: less than the
# connector's 4-minute refresh buffer, so every fresh instance finds the stored
# certificate stale and refreshes (a test knob: Google issues 1-hour certificates).
SHORT = f"{PROJECT}:{REGION}:pg-short-cert"
SHORT_CERT_SECS = 200
# What tests/wasmtime_cli.rs passes to `wasmtime serve` (the README's line).
SERVE_FLAGS = ["-S", "cli", "-S", "http", "-S", "inherit-network", "-S", "allow-ip-name-lookup",
               "-S", "keyvalue"]
STORE_SECRET = "bench: a secret from outside the store"
# The Python app's database: the tutorial's `messages (content)` table.
PY_DATABASE = "python_messages"


def required_env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"bench: {name} is not set; run scripts/bench")
    return value


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Emulator:
    """The emulator binary with the bench instances, until closed."""

    def __init__(self, binary, pg, state_dir, specs=None, extra=()):
        args = [binary, "--state-dir", state_dir, *extra]
        for name, spec in (specs or SPECS).items():
            args += ["--instance", f"{name},{spec.format(pg=pg)}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        lines = queue.Queue()

        def drain():
            for line in self.proc.stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=drain, daemon=True).start()
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            self.close()
            sys.exit("bench: the emulator printed no ready line in 60 s")
        if not line:
            sys.exit(f"bench: the emulator exited ({self.proc.wait()}) before its ready line")
        self.ready = json.loads(line)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


    def admin_calls(self, instance):
        """Admin API calls so far (connectSettings + generateEphemeralCert) for the
        Cloud SQL `instance` (project:region:name)."""
        project, _, name = instance.split(":")
        url = self.ready["control_endpoint"] + "/calls"
        with urllib.request.urlopen(url, timeout=30) as resp:
            calls = json.load(resp)
        key = f"{project}:{name}"
        return sum(calls[m].get(key, 0) for m in ("connectSettings", "generateEphemeralCert"))


def host_args(emu):
    return [
        "--admin-endpoint", emu.ready["admin_endpoint"],
        "--credentials-file", emu.ready["service_account_file"],
        "--user", USER, "--password", PASSWORD, "--database", DATABASE,
    ]


def ours(emu, host, pg, runs, cold_runs, throughput_mb, throughput_runs):
    args = [host, "bench", "--instance", MAIN, *host_args(emu),
            "--runs", str(runs), "--cold-runs", str(cold_runs), "--direct", pg,
            "--throughput-instance", f"default={MAIN}",
            "--throughput-instance", f"aes128gcm={AES}",
            "--throughput-instance", f"chacha20poly1305={CHACHA}",
            "--throughput-mb", str(throughput_mb), "--throughput-runs", str(throughput_runs)]
    out = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def python_connect(connector, timings=None):
    """One connect + login + SELECT 1 + close through Google's connector."""
    started = time.perf_counter()
    conn = connector.connect(MAIN, "pg8000", user=USER, password=PASSWORD, db=DATABASE)
    connected = time.perf_counter()
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone()[0] == 1
    finally:
        conn.close()
    done = time.perf_counter()
    if timings is not None:
        # pg8000 logs in inside connect(): "connect" here includes the login.
        timings.append({"connect_us": (connected - started) * 1e6,
                        "first_query_us": (done - connected) * 1e6,
                        "total_us": (done - started) * 1e6})


def new_python_connector(emu):
    from google.cloud.sql.connector import Connector
    from google.oauth2 import service_account

    creds = service_account.Credentials.from_service_account_file(
        emu.ready["service_account_file"], scopes=[ADMIN_SCOPE])
    # Lazy refresh: what Google recommends for serverless, and what ours does.
    return Connector(sqladmin_api_endpoint=emu.ready["admin_endpoint"],
                     credentials=creds, refresh_strategy="lazy")


def theirs(emu, runs, cold_runs):
    cold, warm = [], []
    log(f"{cold_runs} cold connects by cloud-sql-python-connector, a fresh Connector each")
    for _ in range(cold_runs):
        started = time.perf_counter()
        c = new_python_connector(emu)
        try:
            python_connect(c, cold)
        finally:
            c.close()
        # From creating the connector (its key, token and certificate) on.
        cold[-1]["total_us"] = (time.perf_counter() - started) * 1e6
    log(f"{runs} warm connects by cloud-sql-python-connector")
    c = new_python_connector(emu)
    try:
        python_connect(c)
        for _ in range(runs):
            python_connect(c, warm)
    finally:
        c.close()
    return {"cold": cold, "warm": warm}


def shares(total, parts):
    """`total` cut into `parts` whole shares as even as can be."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def ours_and_theirs(emu, host, pg, args):
    """Rows 1-5: our connects and throughput (`gcp-db-host bench`) and Python's
    connects, in `args.rounds` rounds.

    The machine's speed drifts by tens of percent over minutes; run all of ours and
    then all of Python's and a ratio carries that drift. Each round runs a share of
    every connect count on both sides, the side that goes first alternating, so a
    slow phase hits both. The throughput runs are all in the first round: each
    already alternates the connector with direct TCP."""
    o = {"cold": [], "warm": [], "store_warm": [], "throughput": []}
    p = {"cold": [], "warm": []}
    rounds = zip(shares(args.runs, args.rounds), shares(args.cold_runs, args.rounds))
    for i, (runs, cold_runs) in enumerate(rounds):
        log(f"round {i + 1} of {args.rounds}")
        def run_ours():
            part = ours(emu, host, pg, runs, cold_runs, args.throughput_mb,
                        args.throughput_runs if i == 0 else 0)
            for key in o:
                o[key] += part[key]
        def run_theirs():
            part = theirs(emu, runs, cold_runs)
            for key in p:
                p[key] += part[key]
        for side in (run_ours, run_theirs) if i % 2 == 0 else (run_theirs, run_ours):
            side()
    return o, p


def peak_rss_kib(argv):
    """Runs argv to completion; the peak resident set it reports on stderr
    (`peak memory: N KiB`, its VmHWM: rusage would count this process's own
    peak, which Linux carries across fork and exec)."""
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: {argv[:2]} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    for line in proc.stderr.splitlines():
        if line.startswith("peak memory: ") and line.endswith(" KiB"):
            return int(line[len("peak memory: "):-len(" KiB")])
    sys.exit(f"bench: {argv[:2]} reported no peak memory")


PY_ONE_CONNECT = """
import sys
sys.path.insert(0, {bench_dir!r})
import run
class E: pass
emu = E(); emu.ready = {ready!r}
c = run.new_python_connector(emu)
run.python_connect(c)
c.close()
with open("/proc/self/status") as f:
    hwm = next(l for l in f if l.startswith("VmHWM:")).split()[1]
print(f"peak memory: {{hwm}} KiB", file=sys.stderr)
"""


def memory(emu, host, component):
    ours_kib = peak_rss_kib([host, "query", "--component", component, *host_args(emu), MAIN, "SELECT 1"])
    code = PY_ONE_CONNECT.format(bench_dir=os.path.dirname(os.path.abspath(__file__)),
                                 ready={k: emu.ready[k] for k in ("admin_endpoint", "service_account_file")})
    theirs_kib = peak_rss_kib([sys.executable, "-c", code])
    return ours_kib, theirs_kib


class WasmtimeServe:
    """`wasmtime serve` of messages-http as tests/wasmtime_cli.rs runs it (the README's
    line), against `emu` for `instance`, the connector's cache in the directory `cache`
    (granted as /cache, sealed with a secret); a fresh component instance per request.
    Until closed."""

    def __init__(self, wasmtime, app, emu, instance, cache, app_env=None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.addr = s.getsockname()
        creds_dir, creds_file = os.path.split(emu.ready["service_account_file"])
        if app_env is None:  # messages-http's settings
            app_env = {"INSTANCE": instance, "DB_USER": USER, "DB_PASS": PASSWORD}
        env = {
            **app_env,
            "GOOGLE_APPLICATION_CREDENTIALS": f"/creds/{creds_file}",
            "GCP_DB_ADMIN_ENDPOINT": emu.ready["admin_endpoint"],
            "GCP_DB_KV_BUCKET": "", "GCP_DB_STORE_DIR": "/cache",
            "GCP_DB_STORE_SECRET": STORE_SECRET,
        }
        args = [wasmtime, "serve", *SERVE_FLAGS, "--addr", f"{self.addr[0]}:{self.addr[1]}",
                "--dir", f"{creds_dir}::/creds", "--dir", f"{cache}::/cache"]
        for k, v in env.items():
            args += ["--env", f"{k}={v}"]
        self.launch(args + [app], "wasmtime serve", 120)

    def launch(self, args, what, limit_s):
        """Starts the server and waits (at most `limit_s`) until it listens."""
        self.what = what
        self.output = tempfile.TemporaryFile()
        started = time.perf_counter()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=self.output, stderr=subprocess.STDOUT)
        while True:
            try:
                socket.create_connection(self.addr, timeout=1).close()
                break
            except OSError:
                pass
            if self.proc.poll() is not None:
                self.fail(f"exited with {self.proc.returncode} before listening")
            if time.perf_counter() - started > limit_s:
                self.fail(f"did not listen on {self.addr} in {limit_s} s")
            time.sleep(0.02)
        self.startup_s = time.perf_counter() - started

    def fail(self, why):
        self.close()
        self.output.seek(0)
        tail = self.output.read()[-2000:].decode(errors="replace")
        sys.exit(f"bench: {self.what} {why}:\n{tail}")

    def get(self, path="/", status=200):
        """One `GET path` on a new connection: client-side wall time, the
        connector's own `x-connect-ms` and `x-certificate` (`refreshed`, `store`,
        `cached`), where the app sends them. Any other status than `status` ends
        the bench."""
        started = time.perf_counter()
        conn = http.client.HTTPConnection(*self.addr, timeout=120)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        total_us = (time.perf_counter() - started) * 1e6
        if resp.status != status:
            self.fail(f"answered GET {path} with {resp.status}: {body[:2000]!r}")
        connect_ms = resp.getheader("x-connect-ms")
        return {"total_us": total_us,
                "connect_us": float(connect_ms) * 1000 if connect_ms else None,
                "certificate": resp.getheader("x-certificate")}

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve_store_warm(emu, wasmtime, app, requests):
    """7a: `requests` sequential `GET /` after one warm-up request, and the Admin API
    calls they cost."""
    log(f"wasmtime serve: 1 warm-up + {requests} requests with the directory store")
    with tempfile.TemporaryDirectory(prefix="gcpdb-bench-cache-") as cache:
        server = WasmtimeServe(wasmtime, app, emu, MAIN, cache)
        try:
            server.get()
            before = emu.admin_calls(MAIN)
            samples = [server.get() for _ in range(requests)]
            calls = emu.admin_calls(MAIN) - before
        finally:
            server.close()
    return {"samples": samples, "admin_calls": calls}


def serve_expired_refresh(emu_short, wasmtime, app, runs):
    """7b: `runs` requests that each find the stored certificate stale (it lasts
    less than the refresh buffer) and refresh it with the stored key, after a first
    request that generated and stored the key."""
    log(f"wasmtime serve: 1 + {runs} requests refreshing {SHORT_CERT_SECS} s certificates with the stored key")
    with tempfile.TemporaryDirectory(prefix="gcpdb-bench-cache-") as cache:
        server = WasmtimeServe(wasmtime, app, emu_short, SHORT, cache)
        try:
            server.get()
            before = emu_short.admin_calls(SHORT)
            samples = [server.get() for _ in range(runs)]
            calls = emu_short.admin_calls(SHORT) - before
        finally:
            server.close()
    wrong = [s["certificate"] for s in samples if s["certificate"] != "refreshed"]
    if wrong:
        sys.exit(f"bench: {len(wrong)} of {runs} requests with a stale stored certificate did not "
                 f"refresh (x-certificate: {sorted(set(map(str, wrong)))})")
    return {"samples": samples, "admin_calls": calls}


def serve_first_requests(emu, wasmtime, app, runs):
    """7c and 7d: per run, two deployments (a new cache directory and a new
    `wasmtime serve` each): the first `GET /` of one, and of the other after its
    `GET /warmup`."""
    log(f"wasmtime serve: the first request after {runs} x 2 deployments, with and without warmup")
    cold, warmed, warmups, startup = [], [], [], []
    for _ in range(runs):
        for warm in (False, True):
            with tempfile.TemporaryDirectory(prefix="gcpdb-bench-cache-") as cache:
                server = WasmtimeServe(wasmtime, app, emu, MAIN, cache)
                try:
                    startup.append(server.startup_s * 1e6)
                    if warm:
                        warmups.append(server.get("/warmup"))
                    (warmed if warm else cold).append(server.get())
                finally:
                    server.close()
    return {"cold": cold, "warmed": warmed, "warmups": warmups, "startup_us": startup}


def python_database(pg):
    """A fresh database for the Python app, with the tutorial's table and one row."""
    host, port = pg.rsplit(":", 1)
    psql = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", "postgres"]
    subprocess.run(psql + ["-d", "postgres", "-c", f"DROP DATABASE IF EXISTS {PY_DATABASE}",
                           "-c", f"CREATE DATABASE {PY_DATABASE}"], check=True)
    subprocess.run(psql + ["-d", PY_DATABASE, "-c",
                           "CREATE TABLE messages (content text); "
                           "INSERT INTO messages VALUES ('hello from Cloud SQL'); "
                           f"GRANT SELECT, INSERT ON messages TO {USER}"], check=True)


class HostServe(WasmtimeServe):
    """`gcp-db-host serve --keyvalue` (the project's host) of messages-http against
    `emu` for `instance`, the connector's cache in the host's wasi:keyvalue store
    (bucket gcp-db-connector, sealed with a secret): in the host's memory, or with
    `redis` (a URL) on that Redis server under a key prefix of its own; a fresh
    component instance per request. Until closed."""

    def __init__(self, host, app, emu, instance, redis=None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.addr = s.getsockname()
        creds_dir, creds_file = os.path.split(emu.ready["service_account_file"])
        env = {
            "INSTANCE": instance, "DB_USER": USER, "DB_PASS": PASSWORD,
            "GOOGLE_APPLICATION_CREDENTIALS": f"/creds/{creds_file}",
            "GCP_DB_ADMIN_ENDPOINT": emu.ready["admin_endpoint"],
            "GCP_DB_KV_BUCKET": "gcp-db-connector",
            "GCP_DB_STORE_SECRET": STORE_SECRET,
        }
        args = [host, "serve", "--keyvalue", "--addr", f"{self.addr[0]}:{self.addr[1]}",
                "--dir", f"{creds_dir}::/creds"]
        if redis:
            args += ["--redis", redis, "--redis-prefix", f"bench-{os.getpid()}-{time.time_ns()}"]
        for k, v in env.items():
            args += ["--env", f"{k}={v}"]
        # Compiling the component on a cold cache may take minutes.
        self.launch(args + [app], "gcp-db-host serve", 300)


def serve_host_store(emu, host, app, requests, redis=None):
    """7e, 7f: `gcp-db-host serve` with the store in memory or (`redis`) on Redis:
    `requests` sequential `GET /` after one warm-up request, and the Admin API calls
    they cost."""
    where = "on Redis" if redis else "in memory"
    log(f"gcp-db-host serve: 1 warm-up + {requests} requests with the store {where}")
    server = HostServe(host, app, emu, MAIN, redis)
    try:
        server.get()
        before = emu.admin_calls(MAIN)
        samples = [server.get() for _ in range(requests)]
        calls = emu.admin_calls(MAIN) - before
    finally:
        server.close()
    return {"samples": samples, "admin_calls": calls}


def host_store_rows(w):
    """Rows 7e and 7f (the project's host, its store in memory and on Redis) and
    their explanation."""
    rows, notes = [], []
    for name, label, key in [
            ("7e", "**7e. `gcp-db-host serve`, in-memory store warm: a request**", "host_memory"),
            ("7f", "**7f. `gcp-db-host serve --redis`, Redis store warm: a request**", "host_redis")]:
        samples = w[key]["samples"]
        rows.append(row(label, samples))
        rows.append(row("&nbsp;&nbsp;of which connect (`x-connect-ms`)", samples, "connect_us"))
        n = len(samples)
        p99 = ms(percentile([s["total_us"] for s in samples], 99))
        notes.append(f"- {name}: {n} sequential requests after one warm-up: median {ms(median(samples))} ms, "
                     f"p99 {p99} ms; {w[key]['admin_calls'] * 1000 / n:g} Admin API calls per 1000 "
                     f"requests; {certificates(samples)}.")
    return rows, [
        "Rows 7e, 7f: the project's host serving examples/messages-http (`gcp-db-host serve",
        "--keyvalue`, a fresh instance per request, like `wasmtime serve`), the connector's cache in",
        "the host's `wasi:keyvalue` bucket `gcp-db-connector` (sealed): 7e in the host's memory, 7f on",
        "the Redis server scripts/bench starts (`--redis redis://127.0.0.1:PORT`, on loopback), as",
        "several host processes would share it; client-side wall time per request.",
        "",
    ] + notes


def serve_python(emu, wasmtime, app, requests):
    """8: the Python app under `wasmtime serve` with the directory store warm:
    `requests` sequential `GET /` (connect, log in, list) after one warm-up, the
    Admin API calls they cost, and as many `GET /nothing` (a 404 from Flask: no
    database, so instantiation, WSGI and Flask only)."""
    log(f"wasmtime serve, the Python app: 1 warm-up + {requests} requests with the directory store")
    app_env = {"INSTANCE_CONNECTION_NAME": MAIN, "DB_USER": USER, "DB_PASS": PASSWORD,
               "DB_NAME": PY_DATABASE, "IP_TYPE": "public"}
    with tempfile.TemporaryDirectory(prefix="gcpdb-bench-cache-") as cache:
        server = WasmtimeServe(wasmtime, app, emu, MAIN, cache, app_env)
        try:
            server.get()
            before = emu.admin_calls(MAIN)
            samples = [server.get() for _ in range(requests)]
            calls = emu.admin_calls(MAIN) - before
            no_db = [server.get("/nothing", status=404) for _ in range(requests)]
        finally:
            server.close()
    return {"samples": samples, "admin_calls": calls, "no_db": no_db,
            "startup_us": server.startup_s * 1e6}


def stats(values):
    """median, p90 (nearest rank), max."""
    v = sorted(values)
    p90 = v[max(0, -(-len(v) * 9 // 10) - 1)]
    return statistics.median(v), p90, v[-1]


def percentile(values, pct):
    """Nearest rank."""
    v = sorted(values)
    return v[max(0, -(-len(v) * pct // 100) - 1)]


def certificates(samples):
    """`x-certificate` values and how often, e.g. `1000 × store`."""
    counts = {}
    for s in samples:
        counts[s["certificate"]] = counts.get(s["certificate"], 0) + 1
    return ", ".join(f"{n} × `{c}`" for c, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def ms(us):
    return f"{us / 1000:.1f}"


def row(label, samples, key="total_us"):
    med, p90, mx = stats([s[key] for s in samples])
    return f"| {label} | {ms(med)} | {ms(p90)} | {ms(mx)} | {len(samples)} |"


def median(samples, key="total_us"):
    return statistics.median(s[key] for s in samples)


def by_label(samples, measure):
    """{label: [measure(sample), …]} over the throughput samples, labels in order."""
    out = {}
    for s in samples:
        out.setdefault(s["label"], []).append(measure(s))
    return out


def mb_per_s(sample):
    """A throughput sample's rate, in MB (10^6 bytes) a second."""
    return sample["bytes"] / 1e6 / sample["secs"]


def cpu_ms_per_mb(sample):
    """The host process's CPU milliseconds per MB of a throughput sample."""
    return sample["cpu_secs"] * 1e3 / (sample["bytes"] / 1e6)


def throughput_rows(rates, cpu):
    """The throughput table: `rates` and `cpu` are `by_label` of the samples."""
    direct = statistics.median(rates["direct"])
    lines = ["| path | MB/s (median) | min | max | runs | vs direct | host CPU, ms per MB |",
             "|---|---|---|---|---|---|---|"]
    for label, r in rates.items():
        med = statistics.median(r)
        name = "direct plaintext TCP to PostgreSQL" if label == "direct" else f"connector, TLS 1.3 {label}"
        lines.append(f"| {name} | {med:.0f} | {min(r):.0f} | {max(r):.0f} | {len(r)} | "
                     f"{med / direct:.0%} | {statistics.median(cpu[label]):.2f} |")
    return lines


def aead_ceiling(wasmtime, component, mb):
    """The raw AEAD ceiling of the connector's record layer: bench/aead-ceiling
    (built here next to the component) under the wasmtime CLI decrypting `mb` MB
    of 16 KiB records per suite, nothing else; {suite: MB/s}."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(["cargo", "build", "--locked", "--profile", "wasm", "--target", "wasm32-wasip2",
                    "-p", "aead-ceiling"], check=True, cwd=root)
    wasm = os.path.join(os.path.dirname(component), "aead-ceiling.wasm")
    log(f"AEAD ceiling: {mb} MB of records per suite in wasm")
    out = subprocess.run([wasmtime, "run", wasm, str(mb)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return {r["suite"]: r["mb_per_s"] for r in map(json.loads, out.splitlines())}


def aead_rows(ceiling, direct):
    """The ceiling as rows under the throughput table's, against direct's median MB/s."""
    return [f"| AEAD ceiling in wasm: {suite} record decryption alone (bench/aead-ceiling, best of 5) "
            f"| {rate:.0f} | | | 5 | {rate / direct:.0%} | {1e3 / rate:.2f} |" for suite, rate in ceiling.items()]


def one_thread_bound(ceiling, direct, cpu):
    """The rate a connector with no cost of its own beyond record decryption
    would reach, where decryption and the reader share one thread (a wasm
    guest and the app reading from it do): 1 / (decryption's CPU per MB at
    the ChaCha20-Poly1305 ceiling + the reader's own, direct's CPU per MB).
    `direct` is direct's median MB/s, `cpu` the samples' CPU per MB by label.
    Returns the row, and the sentence splitting the default path's CPU per MB."""
    aead = 1e3 / ceiling["chacha20poly1305"]
    reader, ours = statistics.median(cpu["direct"]), statistics.median(cpu["default"])
    bound = 1e3 / (aead + reader)
    row = (f"| one thread's bound: the chacha20poly1305 ceiling's decryption and the reader's own work "
           f"(direct's CPU per MB) in turn | {bound:.0f} | | | | {bound / direct:.0%} | {aead + reader:.2f} |")
    rest = ours - aead - reader
    split = (f"Of the `default` path's {ours:.2f} ms of host CPU per MB, record decryption at the "
             f"ceiling takes {aead:.2f} ms and the reader's own work (direct's CPU per MB: socket "
             f"reads, the Postgres client) {reader:.2f} ms, which leaves {rest:.2f} ms for rustls' "
             f"state machine, copies and the component boundary")
    if rest < 0:
        split += (": less than nothing, as direct's CPU per MB also counts its waits for "
                  "PostgreSQL and so overstates the reader's own work")
    return row, split + "."


def serve_rows(w):
    """Rows 7a-7d of the connect latency table, and their one-line explanations."""
    a, b, c = w["store_warm"], w["expired"], w["first"]
    connect = "&nbsp;&nbsp;of which connect (`x-connect-ms`)"
    rows = [
        row("**7a. `wasmtime serve`, directory store warm: a request**", a["samples"]),
        row(connect, a["samples"], "connect_us"),
        row("**7b. `wasmtime serve`: a request refreshing an expired certificate with the stored key**", b["samples"]),
        row(connect, b["samples"], "connect_us"),
        row("**7c. `wasmtime serve`: first request after a deployment**", c["cold"]),
        row(connect, c["cold"], "connect_us"),
        row("**7d. `wasmtime serve`: first request after a deployment and its `GET /warmup`**", c["warmed"]),
        row(connect, c["warmed"], "connect_us"),
        row("&nbsp;&nbsp;the `GET /warmup` before it (not in the row)", c["warmups"]),
    ]
    n = len(a["samples"])
    p99 = ms(percentile([s["total_us"] for s in a["samples"]], 99))
    per_1000 = a["admin_calls"] * 1000 / n
    notes = [
        "Rows 7: the wasmtime CLI serving examples/messages-http (`wasmtime serve`, a fresh instance per",
        "request; `GET /` connects, logs in and lists the messages), the connector's cache in a",
        "directory (`--dir …::/cache`, `GCP_DB_STORE_DIR`, sealed); client-side wall time per request.",
        "",
        f"- 7a: {n} sequential requests after one warm-up: p99 {p99} ms; {per_1000:g} Admin API calls",
        f"  (`connectSettings` + `generateEphemeralCert`) per 1000 requests; {certificates(a['samples'])}.",
        f"- 7b: a second emulator issuing {SHORT_CERT_SECS} s certificates (`--cert-lifetime-secs {SHORT_CERT_SECS}`, under the",
        "  connector's 4-minute refresh buffer), after a first request that stored the key: every request",
        f"  refreshes (2 Admin API calls, {b['admin_calls']} in all) without generating a key; {certificates(b['samples'])}.",
        f"- 7c, 7d: {len(c['cold'])} runs each, every run a new cache directory and a new `wasmtime serve`",
        "  (a deployment): 7c times its first `GET /` (key generation, refresh), 7d first sends",
        f"  `GET /warmup`, then times the first `GET /`; 7c {certificates(c['cold'])}, 7d {certificates(c['warmed'])}.",
        f"  `wasmtime serve` itself took {ms(statistics.median(c['startup_us']))} ms (median) to listen.",
    ]
    return rows, notes


def table(o, p, mem, sizes, args, w):
    parts = ["instantiate_us", "token_us", "admin_api_us", "key_generation_us", "tcp_us", "tls_us", "first_query_us"]
    names = {"instantiate_us": "instantiate component", "token_us": "OAuth2 token",
             "admin_api_us": "Admin API (not hidden behind key generation)",
             "key_generation_us": "RSA-2048 key generation", "tcp_us": "TCP connect",
             "tls_us": "TLS 1.3 handshake", "first_query_us": "first query (login + SELECT 1)"}
    out = ["## Connect latency (ms)", "",
           "| row | median | p90 | max | runs |", "|---|---|---|---|---|"]
    out.append(row("**1. cold connect, fresh instance, no cache: total**", o["cold"]))
    for part in parts:
        out.append(row(f"&nbsp;&nbsp;{names[part]}", o["cold"], part))
    out.append(row("**2. warm connect (certificate cached in the instance)**", o["warm"]))
    out.append(row("&nbsp;&nbsp;of which connect", o["warm"], "connect_us"))
    if o["store_warm"]:
        out.append(row("**3. fresh instance, cross-request store warm**", o["store_warm"]))
        out.append(row("&nbsp;&nbsp;of which instantiate component", o["store_warm"], "instantiate_us"))
        out.append(row("&nbsp;&nbsp;of which connect", o["store_warm"], "connect_us"))
    serve, serve_notes = serve_rows(w)
    out += serve
    host_rows, host_notes = host_store_rows(w)
    out += host_rows
    py = w["python"]
    out.append(row("**8. Python app (Flask + SQLAlchemy + pg8000) under `wasmtime serve`, directory store warm: a request**", py["samples"]))
    out.append(row("&nbsp;&nbsp;a request without the database (`GET /nothing`, Flask's 404): instantiation + Flask", py["no_db"]))
    out.append(row("**5. Python connector: first connect, fresh Connector**", p["cold"]))
    out.append(row("&nbsp;&nbsp;of which connect + login (pg8000)", p["cold"], "connect_us"))
    out.append(row("**5. Python connector: warm connect**", p["warm"]))
    out += ["", "Every row ends with a database login and `SELECT 1` (ours: the host's",
            "Postgres client over the component's connection; Python: pg8000).", ""]
    out += serve_notes + [""]
    out += host_notes + [""]
    n = len(py["samples"])
    out += [
        "Row 8: examples/python-messages built by componentize-py, composed with the plain connector",
        "component, served like rows 7 (its cache in a directory, password login, `GET /` connects,",
        "logs in, and SQLAlchemy lists the messages).",
        f"{n} sequential requests after one warm-up: p99 {ms(percentile([s['total_us'] for s in py['samples']], 99))} ms;",
        f"{py['admin_calls'] * 1000 / n:g} Admin API calls per 1000 requests; `wasmtime serve` took",
        f"{ms(py['startup_us'])} ms to listen (it compiles the component: the wasmtime CLI here has no code cache).", ""]

    cold_r = median(o["cold"]) / median(p["cold"])
    warm_r = median(o["warm"]) / median(p["warm"])
    out += ["## Ours / Python connector (medians; below 1 = we are faster)", "",
            "| | ours | Python | ratio |", "|---|---|---|---|",
            f"| cold (first connect) | {ms(median(o['cold']))} | {ms(median(p['cold']))} | {cold_r:.2f} |",
            f"| warm | {ms(median(o['warm']))} | {ms(median(p['warm']))} | {warm_r:.2f} |"]
    if o["store_warm"]:
        sw = median(o["store_warm"]) / median(p["warm"])
        out.append(f"| store-warm fresh instance vs Python warm | {ms(median(o['store_warm']))} | {ms(median(p['warm']))} | {sw:.2f} |")
    for label, ours_samples, theirs_samples, theirs_name in [
            ("7a. `wasmtime serve` store-warm request", w["store_warm"]["samples"], p["warm"], "warm"),
            ("7b. `wasmtime serve` refresh with the stored key", w["expired"]["samples"], p["cold"], "first connect"),
            ("7c. `wasmtime serve` first request after a deployment", w["first"]["cold"], p["cold"], "first connect"),
            ("7d. the same after `GET /warmup`", w["first"]["warmed"], p["cold"], "first connect"),
            ("8. the Python app's store-warm request", py["samples"], p["warm"], "warm")]:
        r = median(ours_samples) / median(theirs_samples)
        out.append(f"| {label} vs Python {theirs_name} | {ms(median(ours_samples))} | {ms(median(theirs_samples))} | {r:.2f} |")
    r = median(py["samples"]) / median(w["store_warm"]["samples"])
    out.append(f"| 8. the Python app's store-warm request vs the Rust handler's (7a) | {ms(median(py['samples']))} | "
               f"{ms(median(w['store_warm']['samples']))} (Rust) | {r:.2f} |")
    rates, cpu = by_label(o["throughput"], mb_per_s), by_label(o["throughput"], cpu_ms_per_mb)
    direct = statistics.median(rates["direct"])
    bound, split = one_thread_bound(w["aead"], direct, cpu)
    out += ["", f"## 4. Throughput: COPY of {args.throughput_mb} MB (`COPY (SELECT repeat('x', 1000) …) TO STDOUT`)", ""]
    out += throughput_rows(rates, cpu)
    out += aead_rows(w["aead"], direct)
    out += [bound]
    out += ["", "`default` is the connector's own cipher preference against a proxy offering all TLS 1.3",
            "suites; the others are proxies narrowed to one suite. The AEAD ceiling rows time the",
            "connector's record decryption alone in wasm (no sockets, no TLS state machine, no",
            "component boundary): the connector's rate cannot pass them.", "",
            "Host CPU is the `gcp-db-host bench` process's, all threads, over the COPY. The reader",
            "(the host's Postgres client) runs in turn with the component's calls, as an app in the",
            "same wasm instance would; direct, it runs beside PostgreSQL, which bounds it. The",
            "one-thread row adds the two costs: the rate the connector would reach if it cost",
            "nothing beyond decrypting the records.",
            "", split, "",
            "## 6. Size and memory", "",
            "| | bytes / KiB |", "|---|---|"]
    for name, size in sizes.items():
        out.append(f"| {name} | {size:,} B |")
    out.append(f"| peak RSS, `gcp-db-host query` process, one connect + SELECT 1 (wasmtime + component) | {mem[0]:,} KiB |")
    out.append(f"| peak RSS, Python process, one connect + SELECT 1 (cloud-sql-python-connector + pg8000) | {mem[1]:,} KiB |")
    return out


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--cold-runs", type=int, default=300,
                    help="first connects, ours and Python's: key generation varies a lot "
                         "from key to key, so its median and p90 take more samples")
    ap.add_argument("--rounds", type=int, default=10,
                    help="rows 1-3 and 5 run in this many rounds, ours and Python's alternating, "
                         "so that a drift in the machine's speed hits both sides of a ratio")
    ap.add_argument("--throughput-mb", type=int, default=100)
    ap.add_argument("--throughput-runs", type=int, default=3)
    ap.add_argument("--serve-requests", type=int, default=1000,
                    help="requests of rows 7a (wasmtime serve, store warm), 7e and 7f "
                         "(gcp-db-host serve, store in memory and on Redis)")
    ap.add_argument("--python-requests", type=int, default=200,
                    help="requests of row 8 (the Python app, store warm)")
    ap.add_argument("--write", metavar="FILE", help="also write the report (e.g. BENCHMARKS.md)")
    args = ap.parse_args()
    # Every round runs at least one connect of each kind.
    args.rounds = max(1, min(args.rounds, args.runs, args.cold_runs))
    host = required_env("GCPDB_HOST")
    pg = required_env("GCPDB_TEST_PG")
    component = required_env("GCP_DB_CONNECTOR_WASM")
    component_kv = required_env("GCP_DB_CONNECTOR_KV_WASM")
    wasmtime = required_env("GCPDB_WASMTIME")
    app = required_env("GCPDB_MESSAGES_HTTP")
    py_app = required_env("GCPDB_PYTHON_MESSAGES")
    emulator = required_env("GCPDB_EMULATOR")
    redis = required_env("GCPDB_TEST_REDIS")
    # The Python app composed with the plain connector, as the README has it.
    py_composed = os.path.join(tempfile.mkdtemp(prefix="gcpdb-bench-py-"), "python_app.wasm")
    subprocess.run([host, "compose", py_app, "--plug", component, "-o", py_composed], check=True)
    python_database(pg)

    w = {}
    # First, since it is the one that can fail: requests that must all refresh.
    with tempfile.TemporaryDirectory(prefix="gcpdb-bench-") as state:
        emu = Emulator(emulator, pg, state, specs={SHORT: "backend={pg}"},
                       extra=["--cert-lifetime-secs", str(SHORT_CERT_SECS)])
        try:
            w["expired"] = serve_expired_refresh(emu, wasmtime, app, args.runs)
        finally:
            emu.close()
    with tempfile.TemporaryDirectory(prefix="gcpdb-bench-") as state:
        emu = Emulator(emulator, pg, state)
        try:
            o, p = ours_and_theirs(emu, host, pg, args)
            mem = memory(emu, host, component)
            w["aead"] = aead_ceiling(wasmtime, component, args.throughput_mb)
            w["store_warm"] = serve_store_warm(emu, wasmtime, app, args.serve_requests)
            w["host_memory"] = serve_host_store(emu, host, app, args.serve_requests)
            w["host_redis"] = serve_host_store(emu, host, app, args.serve_requests, redis)
            w["first"] = serve_first_requests(emu, wasmtime, app, args.runs)
            w["python"] = serve_python(emu, wasmtime, py_composed, args.python_requests)
        finally:
            emu.close()
    sizes = {"gcp_db_connector_component.wasm": os.path.getsize(component),
             "gcp_db_connector_component_kv.wasm": os.path.getsize(component_kv),
             "python_messages.wasm (componentize-py: CPython 3.14 and the app's packages)":
                 os.path.getsize(py_app),
             "the Python app composed with gcp_db_connector_component.wasm": os.path.getsize(py_composed)}
    shutil.rmtree(os.path.dirname(py_composed))
    body = table(o, p, mem, sizes, args, w)
    print("\n".join(body))
    if args.write:
        cmd = "scripts/bench" + ("" if args.runs == 30 else f" --runs {args.runs}")
        cmd += "" if args.cold_runs == 300 else f" --cold-runs {args.cold_runs}"
        cmd += "" if args.rounds == 10 else f" --rounds {args.rounds}"
        cmd += "" if args.serve_requests == 1000 else f" --serve-requests {args.serve_requests}"
        cmd += "" if args.python_requests == 200 else f" --python-requests {args.python_requests}"
        head = ["# Benchmarks", "",
                f"Measured {datetime.date.today().isoformat()} on {machine()},",
                f"with `{cmd}` (the emulator and a real PostgreSQL on loopback; the connector",
                "component in the embedded wasmtime host; rows 7 and 8, examples/messages-http and",
                "examples/python-messages under the",
                f"{tool_version(wasmtime)} CLI; Google's cloud-sql-python-connector",
                f"{version('cloud-sql-python-connector')} with pg8000 {version('pg8000')} against the same emulator in the same run;",
                f"rows 1-3 and 5, ours and Python's connects, in {args.rounds} alternating rounds).",
                "Regenerate with `scripts/bench --write BENCHMARKS.md`.", ""]
        with open(args.write, "w") as f:
            f.write("\n".join(head + body) + "\n")
        log(f"wrote {args.write}")


def tool_version(binary):
    """`wasmtime 48.0.8`, from `binary --version`."""
    try:
        out = subprocess.run([binary, "--version"], check=True, stdout=subprocess.PIPE, text=True).stdout
        return " ".join(out.split()[:2])
    except (OSError, subprocess.CalledProcessError):
        return os.path.basename(binary)


def version(dist):
    from importlib.metadata import version as v
    try:
        return v(dist)
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
