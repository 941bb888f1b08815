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
    connects (login + SELECT 1 each) with the same service-account key;
  - measures the peak memory of one connect in a process of each;
and prints one table (median, p90, max), written to BENCHMARKS.md with --write.
"""

import argparse
import datetime
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time

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



def required_env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"bench: {name} is not set; run scripts/bench")
    return value


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Emulator:
    """The emulator binary with the bench instances, until closed."""

    def __init__(self, binary, pg, state_dir):
        args = [binary, "--state-dir", state_dir]
        for name, spec in SPECS.items():
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


def host_args(emu):
    return [
        "--admin-endpoint", emu.ready["admin_endpoint"],
        "--credentials-file", emu.ready["service_account_file"],
        "--user", USER, "--password", PASSWORD, "--database", DATABASE,
    ]


def ours(emu, host, pg, runs, throughput_mb, throughput_runs):
    args = [host, "bench", "--instance", MAIN, *host_args(emu),
            "--runs", str(runs), "--direct", pg,
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


def theirs(emu, runs):
    cold, warm = [], []
    log(f"{runs} cold connects by cloud-sql-python-connector, a fresh Connector each")
    for _ in range(runs):
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


def stats(values):
    """median, p90 (nearest rank), max."""
    v = sorted(values)
    p90 = v[max(0, -(-len(v) * 9 // 10) - 1)]
    return statistics.median(v), p90, v[-1]


def ms(us):
    return f"{us / 1000:.1f}"


def row(label, samples, key="total_us"):
    med, p90, mx = stats([s[key] for s in samples])
    return f"| {label} | {ms(med)} | {ms(p90)} | {ms(mx)} | {len(samples)} |"


def median(samples, key="total_us"):
    return statistics.median(s[key] for s in samples)


def throughput_rows(samples):
    by = {}
    for s in samples:
        by.setdefault(s["label"], []).append(s["bytes"] / 1e6 / s["secs"])
    direct = statistics.median(by["direct"])
    lines = ["| path | MB/s (median) | min | max | runs | vs direct |", "|---|---|---|---|---|---|"]
    for label, rates in by.items():
        med = statistics.median(rates)
        name = "direct plaintext TCP to PostgreSQL" if label == "direct" else f"connector, TLS 1.3 {label}"
        lines.append(f"| {name} | {med:.0f} | {min(rates):.0f} | {max(rates):.0f} | {len(rates)} | {med / direct:.0%} |")
    return lines, {k: statistics.median(v) / direct for k, v in by.items()}


def table(o, p, mem, sizes, args):
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
    out.append(row("**5. Python connector: first connect, fresh Connector**", p["cold"]))
    out.append(row("&nbsp;&nbsp;of which connect + login (pg8000)", p["cold"], "connect_us"))
    out.append(row("**5. Python connector: warm connect**", p["warm"]))
    out += ["", "Every row ends with a database login and `SELECT 1` (ours: the host's",
            "Postgres client over the component's connection; Python: pg8000).", ""]

    cold_r = median(o["cold"]) / median(p["cold"])
    warm_r = median(o["warm"]) / median(p["warm"])
    out += ["## Ours / Python connector (medians; below 1 = we are faster)", "",
            "| | ours | Python | ratio |", "|---|---|---|---|",
            f"| cold (first connect) | {ms(median(o['cold']))} | {ms(median(p['cold']))} | {cold_r:.2f} |",
            f"| warm | {ms(median(o['warm']))} | {ms(median(p['warm']))} | {warm_r:.2f} |"]
    if o["store_warm"]:
        sw = median(o["store_warm"]) / median(p["warm"])
        out.append(f"| store-warm fresh instance vs Python warm | {ms(median(o['store_warm']))} | {ms(median(p['warm']))} | {sw:.2f} |")
    lines, _ = throughput_rows(o["throughput"])
    out += ["", f"## 4. Throughput: COPY of {args.throughput_mb} MB (`COPY (SELECT repeat('x', 1000) …) TO STDOUT`)", ""]
    out += lines
    out += ["", "`default` is the connector's own cipher preference against a proxy offering all TLS 1.3",
            "suites; the others are proxies narrowed to one suite.", "",
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
    ap.add_argument("--throughput-mb", type=int, default=100)
    ap.add_argument("--throughput-runs", type=int, default=3)
    ap.add_argument("--write", metavar="FILE", help="also write the report (e.g. BENCHMARKS.md)")
    args = ap.parse_args()
    host = required_env("GCPDB_HOST")
    pg = required_env("GCPDB_TEST_PG")
    component = required_env("GCP_DB_CONNECTOR_WASM")
    component_kv = required_env("GCP_DB_CONNECTOR_KV_WASM")

    with tempfile.TemporaryDirectory(prefix="gcpdb-bench-") as state:
        emu = Emulator(required_env("GCPDB_EMULATOR"), pg, state)
        try:
            o = ours(emu, host, pg, args.runs, args.throughput_mb, args.throughput_runs)
            p = theirs(emu, args.runs)
            mem = memory(emu, host, component)
        finally:
            emu.close()
    sizes = {"gcp_db_connector_component.wasm": os.path.getsize(component),
             "gcp_db_connector_component_kv.wasm": os.path.getsize(component_kv)}
    body = table(o, p, mem, sizes, args)
    print("\n".join(body))
    if args.write:
        cmd = "scripts/bench" + ("" if args.runs == 30 else f" --runs {args.runs}")
        head = ["# Benchmarks", "",
                f"Measured {datetime.date.today().isoformat()} on {machine()},",
                f"with `{cmd}` (the emulator and a real PostgreSQL on loopback; the connector",
                "component in the embedded wasmtime host; Google's cloud-sql-python-connector",
                f"{version('cloud-sql-python-connector')} with pg8000 {version('pg8000')} against the same emulator in the same run).",
                "Regenerate with `scripts/bench --write BENCHMARKS.md`.", ""]
        with open(args.write, "w") as f:
            f.write("\n".join(head + body) + "\n")
        log(f"wrote {args.write}")


def version(dist):
    from importlib.metadata import version as v
    try:
        return v(dist)
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
