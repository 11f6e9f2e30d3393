"""rediss:// — the worker and a stock Python client talk to Redis over TLS.

The test makes its own CA and server certificate (openssl) and starts its own
redis-server with TLS only (``--port 0 --tls-port N``). The worker verifies the
server against that CA (kombu's ``ssl_ca_certs`` URL parameter), or
skips verification with ``ssl_cert_reqs=none``.
"""

import ssl
import subprocess

import pytest
import redis as redis_py
from celery import Celery

from conftest import ManagedProcess, free_port, wait_until


@pytest.fixture
def tls_redis(tmp_path):
    # A CA of our own, and a server certificate for 127.0.0.1 signed by it.
    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca-key.pem"
    cert, key, csr = tmp_path / "server.pem", tmp_path / "server-key.pem", tmp_path / "server.csr"
    ext = tmp_path / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    for argv in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "1", "-subj", "/CN=celeriac test CA"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "1", "-extfile", ext],
    ):
        subprocess.run([str(a) for a in argv], check=True, capture_output=True)
    port = free_port()
    server = ManagedProcess("redis-tls", [
        "redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], tmp_path / "redis.log").start()
    probe = redis_py.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca))
    try:
        wait_until(lambda: _ping(probe), 20, message=f"TLS redis-server on port {port}")
        yield port, ca
    finally:
        probe.close()
        server.stop()


def _ping(client) -> bool:
    try:
        return bool(client.ping())
    except redis_py.exceptions.ConnectionError:
        return False


def _client(port, cert) -> Celery:
    app = Celery("tasks", broker=f"rediss://127.0.0.1:{port}/0",
                 backend=f"rediss://127.0.0.1:{port}/1?ssl_cert_reqs=required&ssl_ca_certs={cert}")
    app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(cert)}
    return app


@pytest.mark.timeout(120)
@pytest.mark.parametrize("verify", [True, False], ids=["verified", "ssl_cert_reqs=none"])
def test_round_trip_over_tls(worker, tls_redis, verify):
    port, cert = tls_redis
    query = f"ssl_cert_reqs=required&ssl_ca_certs={cert}" if verify else "ssl_cert_reqs=none"
    w = worker(broker_flags=False, extra_args=[
        "--broker", f"rediss://127.0.0.1:{port}/0?{query}",
        "--result-backend", f"rediss://127.0.0.1:{port}/1?{query}"])
    app = _client(port, cert)
    assert app.send_task("tasks.add", args=(4, 4)).get(timeout=30) == 8
    with pytest.raises(ValueError, match="over tls"):
        app.send_task("tasks.fail", args=("over tls",)).get(timeout=30)
    assert "rediss://127.0.0.1" in w.log_text()
