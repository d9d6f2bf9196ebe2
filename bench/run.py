#!/usr/bin/python3
"""batchfetch benchmark: starts its own loopback upstream (nginx + echo
module), MariaDB and servers, runs every workload against batchfetch and the
peers in the same run, and prints a markdown table of medians and ratios.

Usage: bench/run.py [--runs N] [--quick] [--build DIR] [--chart PNG]
                    [--only W1,W2,W3a,W3b,W4,W5,W6,chart]
                    [--w3a_concurrency 256,1000] [--thread_cpu]
Needs: scripts/install-deps.sh with BATCHFETCH_BENCH_DEPS=1, and a build
(scripts/bench.sh does both). --build defaults to $BATCHFETCH_BUILD_DIR, else
build/."""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_BODY = '{"id":1,"name":"batchfetch","tags":["a","b"],"ok":true}'
# W6: /err503 answers 503 with this many body bytes and no Retry-After.
ERR503_BYTES = 1 << 20
WORKLOADS = ("W1", "W2", "W3a", "W3b", "W4", "W5", "W6", "W7", "chart")
# Workloads that need MariaDB (a --store=mysql server).
STORED = ("W1", "W2", "W3b")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(build, name, *subdirs):
    """The binary in `build` or one of its subdirectories (the CMake layout
    puts the server under service/server/)."""
    for d in ("",) + subdirs:
        path = os.path.join(build, d, name)
        if os.access(path, os.X_OK):
            return path
    raise RuntimeError(f"{name} not found under {build}; build it first")


def thread_cpu(pid):
    """{tid: (comm, utime+stime seconds)} of every thread of `pid`."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.work = tempfile.mkdtemp(prefix="batchfetch-bench-")
        self.procs = []
        self.results = {}
        self.server_bin = find_binary(self.build, "batchfetch_server", "service/server")
        self.driver_bin = find_binary(self.build, "bench_driver")
        self.peer_bin = find_binary(self.build, "curl_multi_peer")

    # --- services -------------------------------------------------------------
    def start_nginx(self):
        self.nginx_port = free_port()
        prefix = os.path.join(self.work, "nginx")
        os.makedirs(os.path.join(prefix, "logs"))
        os.makedirs(os.path.join(prefix, "html"))
        body = os.path.join(prefix, "html", "err503.body")
        with open(body, "wb") as f:
            f.write(b"x" * ERR503_BYTES)
        # nginx's workers may run as another user (www-data under root):
        # mkdtemp's 0700 would make the file a 403.
        for d in (self.work, prefix, os.path.dirname(body)):
            os.chmod(d, 0o711)
        os.chmod(body, 0o644)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 16384; multi_accept on; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  server {{
    listen 127.0.0.1:{self.nginx_port} backlog=8192;
    location /fast {{ default_type application/json; return 200 '{FAST_BODY}'; }}
    location /slow {{ default_type application/json; echo_sleep 0.2; echo '{{"ok":true}}'; }}
    # W6: 503 with a 1 MiB body (static file, so Content-Length is set), no
    # Retry-After. error_page without "=" keeps the 503.
    location /err503 {{ error_page 503 /err503.body; return 503; }}
    location = /err503.body {{ internal; root {prefix}/html; default_type text/plain; }}
  }}
}}
""")
        self.procs.append(subprocess.Popen(
            ["nginx", "-p", prefix, "-c", conf, "-g", "daemon off;"]))
        wait_port(self.nginx_port)

    def start_mariadb(self):
        out = subprocess.check_output(
            [os.path.join(ROOT, "scripts/mariadb-local.sh"), "start",
             os.path.join(self.work, "db")], text=True)
        self.db_port = int(out.strip().splitlines()[-1])

    def start_server(self, store, database="bench"):
        port = free_port()
        cmd = [self.server_bin,
               f"--listen=127.0.0.1:{port}", f"--store={store}",
               "--max_in_flight=1000", "--max_batch_size=1000000",
               "--max_request_mb=256",
               # The upstream is on loopback, which the server denies by
               # default.
               "--egress_allow_cidr=127.0.0.0/8"]
        if store == "mysql":
            cmd += [f"--mysql_port={self.db_port}",
                    f"--mysql_database=batchfetch_{database}"]
        env = dict(os.environ, BATCHFETCH_MYSQL_PASSWORD="batchfetch")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_port(port)
        return proc, port

    def stop(self, proc):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        self.procs.remove(proc)

    def cleanup(self):
        for p in list(self.procs):
            p.terminate()  # nginx's master stops its workers on SIGTERM
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.call([os.path.join(ROOT, "scripts/mariadb-local.sh"), "stop",
                         os.path.join(self.work, "db")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.work, ignore_errors=True)

    # --- clients ---------------------------------------------------------------
    def url(self, path):
        return f"http://127.0.0.1:{self.nginx_port}{path}"

    def driver(self, port, path, count, conc, pid=None, extra=(), expect="ok"):
        cmd = [self.driver_bin,
               f"--server=127.0.0.1:{port}", f"--url={self.url(path)}",
               f"--count={count}", f"--concurrency={conc}", *extra]
        if pid:
            cmd += [f"--pid={pid}", "--sample_rss_ms=20"]
        r = json.loads(subprocess.check_output(cmd, text=True))
        if r[expect] != count:
            raise RuntimeError(f"batchfetch: {r[expect]} of {count} {expect}")
        return r

    def driver_cpu(self, proc, port, path, count, conc):
        """driver(), plus the server's CPU per thread during the run."""
        before = thread_cpu(proc.pid)
        r = self.driver(port, path, count, conc)
        after = thread_cpu(proc.pid)
        r["threads"] = sorted(
            ((after[t][1] - before.get(t, ("", 0.0))[1], after[t][0], t) for t in after),
            reverse=True)
        return r

    def aiohttp(self, path, count, conc, body=None):
        r = json.loads(subprocess.check_output(
            ["/usr/bin/python3", os.path.join(ROOT, "bench/peers/aiohttp_peer.py"),
             self.url(path), str(count), str(conc)] + ([body] if body else []),
            text=True))
        if r["ok"] != count:
            raise RuntimeError(f"aiohttp: {r['ok']} of {count} OK")
        return r

    def curl_multi(self, path, count, conc):
        r = json.loads(subprocess.check_output(
            [self.peer_bin, self.url(path),
             str(count), str(conc)], text=True))
        if r["ok"] != count:
            raise RuntimeError(f"curl_multi_peer: {r['ok']} of {count} OK")
        return r

    def curl_z(self, path, count, conc):
        cfg = os.path.join(self.work, f"curl-{count}.cfg")
        if not os.path.exists(cfg):
            with open(cfg, "w") as f:
                for i in range(count):
                    f.write(f'url = "{self.url(path)}?i={i}"\noutput = "/dev/null"\n')
        start = time.perf_counter()
        subprocess.check_call(["curl", "-s", "--no-progress-meter", "--parallel",
                               "--parallel-max", str(min(conc, 300)), "-K", cfg],
                              stderr=subprocess.DEVNULL)
        return {"seconds": time.perf_counter() - start}

    # --- workloads -------------------------------------------------------------
    def median(self, fn, *args):
        runs = [fn(*args) for _ in range(self.args.runs)]
        seconds = statistics.median(r["seconds"] for r in runs)
        return seconds, runs

    def run(self):
        a = self.args
        scale = 0.2 if a.quick else 1.0
        n = lambda x: max(20, int(x * scale))
        want = set(a.only.split(",")) if a.only else set(WORKLOADS)
        unknown = want - set(WORKLOADS)
        if unknown:
            raise SystemExit(f"--only: unknown {sorted(unknown)}; known: {','.join(WORKLOADS)}")
        self.start_nginx()
        if want & set(STORED):
            self.start_mariadb()
            stored, stored_port = self.start_server("mysql")
        none, none_port = self.start_server("none")
        rows = []

        def row(wid, desc, target, ours, peers, note=""):
            rows.append((wid, desc, target, ours, peers, note))
            print(f"{wid}: {ours:.3f}s  " +
                  "  ".join(f"{k}={v:.3f}s" for k, v in peers.items()), file=sys.stderr)

        # Warm-up: connections, page cache, JIT-free but caches matter.
        self.driver(none_port, "/fast", 2000, 64)
        if want & set(STORED):
            self.driver(stored_port, "/fast", 2000, 64)

        # W1: seed scenario, stored.
        if "W1" in want:
            t, _ = self.median(self.driver, stored_port, "/slow", 20, 20)
            p, _ = self.median(self.aiohttp, "/slow", 20, 20)
            row("W1", "20 URLs x 200 ms, c=20, stored", "<= 0.25 s", t, {"aiohttp": p})

        # W2: 10k slow URLs at concurrency 1000, stored.
        if "W2" in want:
            c2 = n(10000)
            t, _ = self.median(self.driver, stored_port, "/slow", c2, 1000)
            p, _ = self.median(self.aiohttp, "/slow", c2, 1000)
            row("W2", f"{c2} URLs x 200 ms, c=1000, stored", "<= 2.2 s", t, {"aiohttp": p})

        # W3a/W3b: fast JSON, throughput. --w3a_concurrency adds rows at other
        # concurrencies (256 is the one with targets). With --thread_cpu the
        # server's CPU per thread (median run) goes to stderr.
        c3 = n(50000)
        p3 = None
        if "W3a" in want:
            for conc in (int(c) for c in a.w3a_concurrency.split(",")):
                t3a, runs = self.median(self.driver_cpu, none, none_port, "/fast", c3, conc)
                if a.thread_cpu:
                    mid = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
                    print(f"W3a c={conc} server CPU by thread in a {mid['seconds']:.3f} s run: " +
                          ", ".join(f"{comm}/{tid} {cpu:.2f}s" for cpu, comm, tid in mid["threads"]
                                    if cpu >= 0.01), file=sys.stderr)
                m, _ = self.median(self.curl_multi, "/fast", c3, conc)
                peers = {"curl multi loop": m}
                if conc == 256:
                    z, _ = self.median(self.curl_z, "/fast", c3, conc)
                    p3, _ = self.median(self.aiohttp, "/fast", c3, conc)
                    peers = {"curl -Z": z, "curl multi loop": m, "aiohttp": p3}
                wid = "W3a" if conc == 256 else f"W3a c={conc}"
                target = (">= 1.0x curl -Z, >= 4x aiohttp, >= 0.75x curl multi loop"
                          if conc == 256 else
                          ">= 0.9x curl multi loop" if conc == 1000 else "")
                row(wid, f"{c3} fast URLs, c={conc}, --store=none", target, t3a, peers)
        if "W3b" in want:
            if p3 is None:
                p3, _ = self.median(self.aiohttp, "/fast", c3, 256)
            t3b, _ = self.median(self.driver, stored_port, "/fast", c3, 256)
            row("W3b", f"{c3} fast URLs, c=256, stored", ">= 15,000 URLs/s, >= 3x aiohttp",
                t3b, {"aiohttp": p3})

        if "W4" in want:
            self.w4(n, row)
        if "W5" in want:
            self.w5(n, none_port, row)
        if "W6" in want:
            self.w6(n, row)
        if "W7" in want:
            self.w7(n, none_port, row)
        chart = self.chart(n, none_port) if "chart" in want else []
        self.report(rows, chart)

    def w4(self, n, row):
        # W4: memory. Fresh servers, so VmHWM is each run's own peak. The
        # per-in-flight cost compares c=1000 with c=10 on the same batch size,
        # so memory that grows with the batch (its URLs) cancels out.
        c4 = n(200000)
        peaks = {}
        for conc, count in ((1000, c4), (1000, n(50000)), (10, n(50000))):
            proc, port = self.start_server("none")
            r = self.driver(port, "/fast", count, conc, pid=proc.pid)
            peaks[(conc, count)] = (r["peak_rss_kb"], r["seconds"])
            self.stop(proc)
        big, k1000, k10 = peaks[(1000, c4)], peaks[(1000, n(50000))], peaks[(10, n(50000))]
        per_req = (k1000[0] - k10[0]) * 1024 / 990
        row("W4", f"{c4} fast URLs, c=1000, client reading",
            "peak RSS <= 300 MB; <= 32 KiB per in-flight", big[1], {},
            f"peak RSS {big[0]/1024:.0f} MB; {n(50000)} URLs: {k1000[0]/1024:.0f} MB at c=1000 vs "
            f"{k10[0]/1024:.0f} MB at c=10 = {per_req/1024:.1f} KiB per in-flight request")

    def w5(self, n, none_port, row):
        # W5: overhead per result against the bare libcurl loop.
        c5 = n(20000)
        for conc in (1, 64):
            t, _ = self.median(self.driver, none_port, "/fast", c5, conc)
            m, _ = self.median(self.curl_multi, "/fast", c5, conc)
            row(f"W5 c={conc}", f"{c5} fast URLs, c={conc}, --store=none",
                "<= 100 us added per result", t, {"curl multi loop": m},
                f"added {(t - m) / c5 * 1e6:.0f} us per result")

    def w7(self, n, none_port, row):
        # W7: requests with a body. Each one gets its own connection
        # (CURLOPT_FORBID_REUSE: an upstream that ignores bodies must not be
        # able to answer another caller's request with one), so this is what
        # that safety costs against the same batch as GETs, and against
        # aiohttp, which reuses connections after a POST.
        c7 = n(20000)
        body = '{"query":"' + "x" * 50 + '"}'
        t, _ = self.median(self.driver, none_port, "/fast", c7, 256,
                           None, [f"--body={body}"])
        g, _ = self.median(self.driver, none_port, "/fast", c7, 256)
        p, _ = self.median(self.aiohttp, "/fast", c7, 256, body)
        row("W7", f"{c7} POSTs of a 64-byte body, c=256, --store=none",
            "reported", t, {"batchfetch GET": g, "aiohttp POST": p},
            "a request with a body never reuses its connection")

    def w6(self, n, row):
        # W6: memory while retries wait. Every attempt gets a 503 with a 1 MiB
        # body and no Retry-After; 3 attempts, backoff up to 10 s, retry on
        # 5xx. A fresh server per run, so VmHWM is that run's own peak. The
        # window (2 x concurrency) bounds what is in flight or unread; any
        # peak well above window x 1 MiB is memory held by waiting retries.
        c6 = n(20000)
        conc = self.args.w6_concurrency
        extra = ["--max_attempts=3", "--max_backoff=10s", "--retry_on_5xx"]
        if self.args.w6_initial_backoff:
            extra.append(f"--initial_backoff={self.args.w6_initial_backoff}")
        runs = []
        for _ in range(self.args.runs):
            proc, port = self.start_server("none")
            r = self.driver(port, "/err503", c6, conc, pid=proc.pid, extra=extra,
                            expect="http_error")
            if r["attempts"] != 3 * c6:
                raise RuntimeError(f"W6: {r['attempts']} attempts, expected {3 * c6}")
            runs.append(r)
            self.stop(proc)
        # The same batch without retries: what the window alone costs.
        proc, port = self.start_server("none")
        base = self.driver(port, "/err503", c6, conc, pid=proc.pid, expect="http_error")
        self.stop(proc)
        peak = statistics.median(r["peak_rss_kb"] for r in runs) / 1024
        t = statistics.median(r["seconds"] for r in runs)
        backoff = self.args.w6_initial_backoff or "100ms (default)"
        row("W6", f"{c6} URLs -> 503 + 1 MiB body, c={conc}, 3 attempts, "
            f"backoff {backoff}..10s", "peak RSS < 300 MB", t, {},
            f"peak RSS {peak:.0f} MB ({'met' if peak < 300 else 'NOT met'}); runs: " +
            ", ".join(f"{r['peak_rss_kb'] / 1024:.0f}" for r in runs) +
            f" MB; same batch without retries: {base['peak_rss_kb'] / 1024:.0f} MB "
            f"(window {2 * conc} x 1 MiB)")

    def chart(self, n, none_port):
        # Throughput against concurrency, for the chart.
        chart = []
        cc = n(20000)
        for conc in (16, 64, 256, 1000):
            t, _ = self.median(self.driver, none_port, "/fast", cc, conc)
            m, _ = self.median(self.curl_multi, "/fast", cc, conc)
            z, _ = self.median(self.curl_z, "/fast", cc, conc)
            p, _ = self.median(self.aiohttp, "/fast", cc, conc)
            chart.append((conc, cc / t, cc / m, cc / z, cc / p))
        return chart

    def report(self, rows, chart):
        out = ["| id | workload | target | batchfetch | peers (same run) | ratio | notes |",
               "|---|---|---|---|---|---|---|"]
        for wid, desc, target, ours, peers, note in rows:
            count = int(re.match(r"(\d+)", desc).group(1))
            peer_txt = "; ".join(f"{k} {v:.3f} s ({count / v:,.0f}/s)" for k, v in peers.items())
            ratio = "; ".join(f"{v / ours:.2f}x {k}" for k, v in peers.items())
            out.append(f"| {wid} | {desc} | {target} | {ours:.3f} s ({count / ours:,.0f}/s) "
                       f"| {peer_txt} | {ratio} | {note} |")
        if not chart:
            print("\n".join(out))
            return
        out.append("")
        out.append("Throughput (URLs/s) against concurrency, 20k fast URLs, --store=none:")
        out.append("")
        out.append("| concurrency | batchfetch | curl multi loop | curl -Z (max 300) | aiohttp |")
        out.append("|---|---|---|---|---|")
        for conc, *tp in chart:
            out.append(f"| {conc} | " + " | ".join(f"{x:,.0f}" for x in tp) + " |")
        table = "\n".join(out)
        print(table)
        if self.args.chart:
            data = os.path.join(self.work, "chart.dat")
            with open(data, "w") as f:
                for conc, *tp in chart:
                    f.write(f"{conc} " + " ".join(f"{x:.0f}" for x in tp) + "\n")
            script = f"""
set terminal pngcairo size 900,520
set output '{os.path.abspath(self.args.chart)}'
set title 'Fast JSON URLs on loopback, 2 cores: throughput vs concurrency'
set xlabel 'concurrency'; set ylabel 'URLs/s'; set logscale x 2; set key top left
set grid
plot '{data}' u 1:2 w lp lw 2 t 'batchfetch (--store=none)', \\
     '' u 1:3 w lp t 'bare libcurl multi loop', \\
     '' u 1:4 w lp t 'curl -Z (parallel-max <= 300)', \\
     '' u 1:5 w lp t 'aiohttp + Semaphore'
"""
            subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="20%% sizes, for a smoke run")
    ap.add_argument("--build", default=os.environ.get("BATCHFETCH_BUILD_DIR",
                                                      os.path.join(ROOT, "build")))
    ap.add_argument("--chart", default="")
    ap.add_argument("--only", default="",
                    help="comma-separated workloads to run: " + ",".join(WORKLOADS))
    ap.add_argument("--w3a_concurrency", default="256",
                    help="comma-separated W3a concurrencies (e.g. 256,1000)")
    ap.add_argument("--thread_cpu", action="store_true",
                    help="print the server's CPU per thread for each W3a concurrency")
    ap.add_argument("--w6_concurrency", type=int, default=32,
                    help="W6 batch concurrency (default 32, the server's default)")
    ap.add_argument("--w6_initial_backoff", default="",
                    help="W6 RetryPolicy.initial_backoff, e.g. 2s (default: the "
                         "server's 100ms)")
    args = ap.parse_args()
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
