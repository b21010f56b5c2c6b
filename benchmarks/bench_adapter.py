"""Load test of the external metrics adapter on loopback: requests per second and latency percentiles.

The adapter runs in a child process (so client and server do not share a GIL) with 200 variants in its store
and the authentication the aggregator uses (front-proxy client certificate + X-Remote-User; the caller in
system:masters, so no SubjectAccessReview round trip: reviews are cached for 10 s in a cluster anyway), set up
as ``variant-autoscaler adapter`` does: a reloadable TLS context and trust, with both reloads polling.
Clients ask for ``variant_desired_replicas`` of one variant each, as the HPA does.

Bounded: a fixed number of requests per phase and a time cap. Phases:
  keep-alive   CLIENTS threads, each on one kept-alive TLS connection (how the aggregator talks to us)
  new-conn     one request per new TLS connection (handshake included)

    python benchmarks/bench_adapter.py [--requests 4000] [--clients 4] [--time-cap 30]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

VARIANTS = 200
NAMESPACE = "llm"


def _serve(directory: str, ready: multiprocessing.synchronize.Event, port_value: multiprocessing.sharedctypes.Synchronized,
           stop: multiprocessing.synchronize.Event) -> None:
    from cryptography import x509

    from autoscaler.adapter.api import ExternalMetricsAPI
    from autoscaler.adapter.auth import (
        AuthenticationConfig,
        PrivilegedGroupAuthorizer,
        RequestHeaderConfig,
        TrustedCertAuthenticator,
        UnionAuthenticator,
    )
    from autoscaler.adapter.reload import AuthenticationReloader, Periodic
    from autoscaler.adapter.server import AdapterServer
    from autoscaler.adapter.store import DecisionStore, VariantValues
    from autoscaler.adapter.tls import ServingTLS
    from autoscaler.controller.ports import WallClock
    from autoscaler.core.types import VariantRef
    from autoscaler.logs import configure_logging

    configure_logging(level="warning", fmt="json")
    d = Path(directory)
    store = DecisionStore(max_age_s=3600, clock=WallClock())
    now = time.time()
    store.put([VariantValues(ref=VariantRef(NAMESPACE, f"v{i}"),
                             labels={"variant": f"v{i}", "model": f"m{i % 10}", "role": "decode", "accelerator": "H100"},
                             values={"variant_desired_replicas": float(i % 7 + 1)}, decided_at=now)
               for i in range(VARIANTS)], cycle_at=now)

    class Deny:
        def authorize(self, attributes):
            return False, "benchmark: only system:masters"

    front_ca = x509.load_pem_x509_certificate((d / "front-ca.crt").read_bytes())
    config = AuthenticationConfig(request_header=RequestHeaderConfig(client_cas=(front_ca,),
                                                                     allowed_names=("front-proxy-client",)))
    certificates = TrustedCertAuthenticator(config)
    api = ExternalMetricsAPI(store=store, authenticator=UnionAuthenticator([certificates]),
                             authorizer=PrivilegedGroupAuthorizer(Deny()))
    tls = ServingTLS(cert=d / "serving.crt", key=d / "serving.key", client_cas_pem=config.trusted_cas_pem())
    reloader = AuthenticationReloader(load=lambda: config, authenticator=certificates, tls=tls)
    with AdapterServer(api=api, ssl_context=tls.current) as server, \
            Periodic(name="auth-reload", interval_s=30.0, task=reloader.reload), \
            Periodic(name="cert-reload", interval_s=10.0, task=tls.reload):
        port_value.value = server.port
        ready.set()
        stop.wait()


def _client_context(d: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(d / "serving.crt"))
    context.load_cert_chain(str(d / "proxy.crt"), str(d / "proxy.key"))
    return context


HEADERS = {"X-Remote-User": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
           "X-Remote-Group": "system:masters", "Accept": "application/json"}


def _path(i: int) -> str:
    return (f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/variant_desired_replicas"
            f"?labelSelector=variant%3Dv{i % VARIANTS}")


def _keep_alive(port: int, context: ssl.SSLContext, count: int, deadline: float, out: list[float],
                errors: list[str]) -> None:
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    try:
        for i in range(count):
            if time.perf_counter() > deadline:
                break
            started = time.perf_counter()
            connection.request("GET", _path(i), headers=HEADERS)
            response = connection.getresponse()
            body = response.read()
            out.append(time.perf_counter() - started)
            if response.status != 200 or b'"items":[{' not in body:
                errors.append(f"{response.status}: {body[:120]!r}")
    finally:
        connection.close()


def _new_connections(port: int, context: ssl.SSLContext, count: int, deadline: float, out: list[float],
                     errors: list[str]) -> None:
    for i in range(count):
        if time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
        connection.request("GET", _path(i), headers=HEADERS)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        out.append(time.perf_counter() - started)
        if response.status != 200:
            errors.append(f"{response.status}: {body[:120]!r}")


def _report(name: str, latencies: list[float], wall_s: float, errors: list[str], wanted: int) -> bool:
    if not latencies:
        print(f"{name:11s} no request completed")
        return False
    ordered = sorted(latencies)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
    capped = " (time cap hit)" if len(latencies) < wanted else ""
    print(f"{name:11s} requests={len(latencies):5d}{capped} errors={len(errors)} "
          f"throughput={len(latencies) / wall_s:8.0f} req/s  p50={p(0.50):6.2f} ms  p99={p(0.99):6.2f} ms  "
          f"max={ordered[-1] * 1000:6.2f} ms  mean={statistics.fmean(ordered) * 1000:6.2f} ms")
    for e in errors[:3]:
        print(f"  error: {e}")
    return not errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="keep-alive phase: requests in total")
    parser.add_argument("--clients", type=int, default=4, help="keep-alive phase: concurrent connections")
    parser.add_argument("--new-connection-requests", type=int, default=300)
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per phase at most")
    args = parser.parse_args()

    from autoscaler.certs import Authority, self_signed

    with tempfile.TemporaryDirectory(prefix="bench-adapter-") as tmp:
        d = Path(tmp)
        serving = self_signed(d, hosts=("localhost", "127.0.0.1"))
        assert serving.cert == d / "serving.crt"
        front = Authority("front-proxy-ca")
        front.write(d / "front-ca.crt")
        front.issue(d, "proxy", common_name="front-proxy-client")

        ctx = multiprocessing.get_context("spawn")
        ready, stop, port = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
        server = ctx.Process(target=_serve, args=(tmp, ready, port, stop), daemon=True)
        server.start()
        try:
            if not ready.wait(timeout=30):
                print("adapter did not start", file=sys.stderr)
                return 1
            context = _client_context(d)
            ok = True

            latencies: list[float] = []
            errors: list[str] = []
            per_client = args.requests // args.clients
            deadline = time.perf_counter() + args.time_cap
            started = time.perf_counter()
            threads = [threading.Thread(target=_keep_alive, args=(port.value, context, per_client, deadline,
                                                                  latencies, errors)) for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ok &= _report("keep-alive", latencies, time.perf_counter() - started, errors, per_client * args.clients)

            latencies, errors = [], []
            deadline = time.perf_counter() + args.time_cap
            started = time.perf_counter()
            _new_connections(port.value, context, args.new_connection_requests, deadline, latencies, errors)
            ok &= _report("new-conn", latencies, time.perf_counter() - started, errors, args.new_connection_requests)
        finally:
            stop.set()
            server.join(timeout=10)
            if server.is_alive():
                server.terminate()
                server.join()
    print(f"(adapter in a child process, {args.clients} client threads, {VARIANTS} variants, loopback TLS)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
