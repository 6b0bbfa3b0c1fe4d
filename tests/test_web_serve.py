"""`ejlb serve --http` as a real process: the REST API and the dashboard next to gRPC, a browser
session that survives a SIGHUP restart of the control plane, TLS with the gRPC certificate, and
bad flags."""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys

import pytest

from e2e_netns_tools import wait_until
from ejlb.uri import EjfatURI
from web_tools import Http

EJLB = [sys.executable, "-c", "from ejlb.cli.main import main; main()"]


def _serve(tmp_path, *extra):
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([*EJLB, "serve", "--listen", "127.0.0.1:0", "--backend", "memory", *extra],
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    uri = proc.stdout.readline().strip()
    if not uri.startswith("ejfat"):
        proc.kill()
        pytest.fail(f"ejlb serve printed {uri!r}; log:\n{log.read_text()}")
    url = re.search(r"web dashboard and REST API on (\S+)", log.read_text())
    assert url, log.read_text()  # logged before the URI is printed
    return proc, EjfatURI.parse(uri), url.group(1), log


def _stop(proc, log):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_serve_http_rest_and_session_across_sighup(tmp_path):
    proc, uri, url, log = _serve(tmp_path, "--http", "127.0.0.1:0", "--db", str(tmp_path / "cp.db"))
    try:
        assert url.startswith("http://127.0.0.1:")
        script = Http(url, uri.token)
        r = script.post("/api/v1/lbs", {"name": "served"})
        assert r.status == 200, r.text
        browser = Http(url)
        assert browser.login(uri.token).status == 200
        assert uri.token not in log.read_text()  # never logged, not even at login
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "control plane restarted" in log.read_text(), 20, "the restart")
        # the same browser session, now served by the restarted control plane
        lbs = browser.get("/api/v1/lbs")
        assert lbs.status == 200 and [o["name"] for o in lbs.json["loadBalancers"]] == ["served"]
        assert browser.request("DELETE", f"/api/v1/lbs/{r.json['lbId']}").status == 200
        page = browser.get("/")
        assert page.status == 200 and "ejlb control plane" in page.text
    finally:
        _stop(proc, log)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_serve_http_with_tls_uses_the_grpc_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    cfg = tmp_path / "cp.yaml"
    cfg.write_text(f"tls: {{cert: {cert}, key: {key}}}\nhttp: {{host: 127.0.0.1, port: 0}}\n")
    proc, uri, url, log = _serve(tmp_path, "-c", str(cfg))
    try:
        assert url.startswith("https://") and uri.tls
        r = Http(url, uri.token, ca=str(cert)).get("/api/v1/version")
        assert r.status == 200 and r.json["compatTag"] == "ejfat-loadbalancer-v1"
        browser = Http(url, ca=str(cert))
        login = browser.login(uri.token)
        assert login.status == 200 and "Secure" in login.headers["Set-Cookie"]
    finally:
        _stop(proc, log)


@pytest.mark.parametrize("flags,match", [
    (["--http", "8080"], "--http '8080': expected HOST:PORT"),
    (["--http", "127.0.0.1:99999"], "http.port=99999"),
])
def test_serve_rejects_bad_http_flags(flags, match):
    r = subprocess.run([*EJLB, "serve", "--backend", "memory", *flags], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and match in r.stderr, r.stderr


def test_serve_http_port_in_use_is_one_line_failure(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([*EJLB, "serve", "--listen", "127.0.0.1:0", "--backend", "memory",
                            "--http", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and f"http=127.0.0.1:{port}: cannot serve" in r.stderr and "Traceback" not in r.stderr
