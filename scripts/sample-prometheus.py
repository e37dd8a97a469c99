#!/usr/bin/env python3
"""A Prometheus holding two weeks of a StatefulSet's CPU history, to follow
docs/compare-with-your-hpa.md without a cluster of your own.

It writes what a cluster's Prometheus would hold for StatefulSet shop/web
(cAdvisor's container_cpu_usage_seconds_total per pod, scraped every minute,
and kube-state-metrics' kube_pod_container_resource_requests and
kube_pod_owner) after a bundled recorded trace, moved to end now: the
trace's percent of --cores cores (16) is the demand, shared by four pods
that each request 500m. promtool backfills a TSDB from it (`tsdb create-blocks-from
openmetrics`), and Prometheus serves it on 127.0.0.1:9090 until Ctrl-C.

    scripts/sample-prometheus.py [--port 9090] [--trace FILE] [--cores 16] [--days 14]

Uses the prometheus and promtool that `make test` installs into
$PAS_CACHE/bin (scripts/setup.sh tools).
"""

import argparse
import csv
import datetime as dt
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = pathlib.Path(os.environ.get("PAS_CACHE", pathlib.Path.home() / ".cache/pas"))
PODS, REQUEST_CORES, STEP = 4, 0.5, 300


def rows(trace, days):
    with open(trace) as f:
        points = [(dt.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")), float(r["cpu"]))
                  for r in csv.DictReader(f)]
    points = points[-(days * 86400 // STEP):]
    end = (int(time.time()) // STEP) * STEP
    shift = end - int(points[-1][0].timestamp())
    return [(int(t.timestamp()) + shift, max(cpu, 0.0)) for t, cpu in points]


def openmetrics(points, total_cores, out):
    pods = [f"web-{i}" for i in range(PODS)]
    out.write("# TYPE container_cpu_usage_seconds counter\n")
    for pod in pods:
        counter = 0.0
        for t, cpu in points[1:]:
            cores = cpu / 100 * total_cores / PODS
            for minute in range(1, 6):
                counter += cores * 60
                out.write(f'container_cpu_usage_seconds_total{{namespace="shop",pod="{pod}",container="app"}} '
                          f"{counter:.6f} {t - STEP + 60 * minute}\n")
    first, last = points[0][0], points[-1][0]
    for family, value, labels in [
        ("kube_pod_container_resource_requests", REQUEST_CORES, 'container="app",resource="cpu",unit="core"'),
        ("kube_pod_owner", 1, 'owner_kind="StatefulSet",owner_name="web",owner_is_controller="true"'),
    ]:
        out.write(f"# TYPE {family} gauge\n")
        for pod in pods:
            for t in range(first, last + 1, 60):
                out.write(f'{family}{{namespace="shop",pod="{pod}",{labels}}} {value} {t}\n')
    out.write("# EOF\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--trace", default=str(ROOT / "testdata/traces/nab-rds_cpu_utilization_cc0c53.csv"))
    parser.add_argument("--cores", type=float, default=16.0)
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args()
    prometheus, promtool = CACHE / "bin/prometheus", CACHE / "bin/promtool"
    if not (prometheus.exists() and promtool.exists()):
        sys.exit(f"{prometheus} or {promtool} is missing: run scripts/setup.sh tools (make test does)")
    work = pathlib.Path(tempfile.mkdtemp(prefix="pas-prometheus-"))
    try:
        points = rows(args.trace, args.days)
        with open(work / "history.om", "w") as f:
            openmetrics(points, args.cores, f)
        print(f"Backfilling {len(points)} five-minute steps of shop/web ({args.days} days) ...", file=sys.stderr)
        subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", work / "history.om", work / "data"],
                       check=True, stdout=subprocess.DEVNULL)
        (work / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
        server = subprocess.Popen([prometheus, f"--config.file={work / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={work / 'data'}", "--storage.tsdb.retention.time=100y",
                                   f"--web.listen-address=127.0.0.1:{args.port}"],
                                  stdout=subprocess.DEVNULL, stderr=open(work / "prometheus.log", "w"))
        url = f"http://127.0.0.1:{args.port}"
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            server.kill()
            sys.exit(f"prometheus did not start:\n{(work / 'prometheus.log').read_text()}")
        print(f"Prometheus with shop/web's history: {url} (Ctrl-C stops it)", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: server.terminate())
        try:
            server.wait()
        except KeyboardInterrupt:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
