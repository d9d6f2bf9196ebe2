#!/usr/bin/python3
"""batchfetch benchmark: starts its own loopback upstream (nginx + echo
module), MariaDB and servers, runs every workload against batchfetch and the
peers in the same run, and prints a markdown table of medians and ratios.

Usage: bench/run.py [--runs N] [--quick] [--build DIR] [--chart PNG]
Needs: scripts/install-deps.sh with BATCHFETCH_BENCH_DEPS=1, and a build
(scripts/bench.sh does both)."""
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    # --- services -------------------------------------------------------------
    def start_nginx(self):
        self.nginx_port = free_port()
        prefix = os.path.join(self.work, "nginx")
        os.makedirs(os.path.join(prefix, "logs"))
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
        cmd = [os.path.join(self.build, "batchfetch_server"),
               f"--listen=127.0.0.1:{port}", f"--store={store}",
               "--max_in_flight=1000", "--max_batch_size=1000000",
               "--max_request_mb=256"]
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

    def driver(self, port, path, count, conc, pid=None):
        cmd = [os.path.join(self.build, "bench_driver"),
               f"--server=127.0.0.1:{port}", f"--url={self.url(path)}",
               f"--count={count}", f"--concurrency={conc}"]
        if pid:
            cmd += [f"--pid={pid}", "--sample_rss_ms=20"]
        r = json.loads(subprocess.check_output(cmd, text=True))
        if r["ok"] != count:
            raise RuntimeError(f"batchfetch: {r['ok']} of {count} OK")
        return r

    def aiohttp(self, path, count, conc):
        r = json.loads(subprocess.check_output(
            ["/usr/bin/python3", os.path.join(ROOT, "bench/peers/aiohttp_peer.py"),
             self.url(path), str(count), str(conc)], text=True))
        if r["ok"] != count:
            raise RuntimeError(f"aiohttp: {r['ok']} of {count} OK")
        return r

    def curl_multi(self, path, count, conc):
        r = json.loads(subprocess.check_output(
            [os.path.join(self.build, "curl_multi_peer"), self.url(path),
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
        self.start_nginx()
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
        self.driver(stored_port, "/fast", 2000, 64)

        # W1: seed scenario, stored.
        t, _ = self.median(self.driver, stored_port, "/slow", 20, 20)
        p, _ = self.median(self.aiohttp, "/slow", 20, 20)
        row("W1", "20 URLs x 200 ms, c=20, stored", "<= 0.25 s", t, {"aiohttp": p})

        # W2: 10k slow URLs at concurrency 1000, stored.
        c2 = n(10000)
        t, _ = self.median(self.driver, stored_port, "/slow", c2, 1000)
        p, _ = self.median(self.aiohttp, "/slow", c2, 1000)
        row("W2", f"{c2} URLs x 200 ms, c=1000, stored", "<= 2.2 s", t, {"aiohttp": p})

        # W3a/W3b: fast JSON, throughput.
        c3 = n(50000)
        t3a, _ = self.median(self.driver, none_port, "/fast", c3, 256)
        z, _ = self.median(self.curl_z, "/fast", c3, 256)
        m, _ = self.median(self.curl_multi, "/fast", c3, 256)
        p3, _ = self.median(self.aiohttp, "/fast", c3, 256)
        row("W3a", f"{c3} fast URLs, c=256, --store=none", ">= 1.0x curl -Z, >= 4x aiohttp",
            t3a, {"curl -Z": z, "curl multi loop": m, "aiohttp": p3})
        t3b, _ = self.median(self.driver, stored_port, "/fast", c3, 256)
        row("W3b", f"{c3} fast URLs, c=256, stored", ">= 15,000 URLs/s, >= 3x aiohttp",
            t3b, {"aiohttp": p3})

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

        # W5: overhead per result against the bare libcurl loop.
        c5 = n(20000)
        for conc in (1, 64):
            t, _ = self.median(self.driver, none_port, "/fast", c5, conc)
            m, _ = self.median(self.curl_multi, "/fast", c5, conc)
            row(f"W5 c={conc}", f"{c5} fast URLs, c={conc}, --store=none",
                "<= 100 us added per result", t, {"curl multi loop": m},
                f"added {(t - m) / c5 * 1e6:.0f} us per result")

        # Throughput against concurrency, for the chart.
        chart = []
        cc = n(20000)
        for conc in (16, 64, 256, 1000):
            t, _ = self.median(self.driver, none_port, "/fast", cc, conc)
            m, _ = self.median(self.curl_multi, "/fast", cc, conc)
            z, _ = self.median(self.curl_z, "/fast", cc, conc)
            p, _ = self.median(self.aiohttp, "/fast", cc, conc)
            chart.append((conc, cc / t, cc / m, cc / z, cc / p))
        self.report(rows, chart)

    def report(self, rows, chart):
        out = ["| id | workload | target | batchfetch | peers (same run) | ratio | notes |",
               "|---|---|---|---|---|---|---|"]
        for wid, desc, target, ours, peers, note in rows:
            count = int(re.match(r"(\d+)", desc).group(1))
            peer_txt = "; ".join(f"{k} {v:.3f} s ({count / v:,.0f}/s)" for k, v in peers.items())
            ratio = "; ".join(f"{v / ours:.2f}x {k}" for k, v in peers.items())
            out.append(f"| {wid} | {desc} | {target} | {ours:.3f} s ({count / ours:,.0f}/s) "
                       f"| {peer_txt} | {ratio} | {note} |")
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
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--chart", default="")
    args = ap.parse_args()
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
