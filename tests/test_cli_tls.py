"""`--ca` and `--insecure` against a real TLS control plane (ejfats://), certificate made by openssl."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from cli_helpers import ejlb
from ejlb.control.config import ControlConfig
from ejlb.control.server import ControlPlane

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def tls_plane(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    cp = ControlPlane(ControlConfig(port=0, backend="memory", tls_cert=str(cert), tls_key=str(key))).start()
    try:
        yield cp.admin_uri, cert
    finally:
        cp.stop()


def test_ca_file_verifies_the_server(tls_plane):
    uri, cert = tls_plane
    assert uri.startswith("ejfats://")
    r = ejlb("--ca", str(cert), "--json", "version", uri=uri)
    assert r.code == 0, r.err
    assert r.json()["server"]["compatTag"]


def test_insecure_skips_verification(tls_plane):
    uri, _ = tls_plane
    r = ejlb("--insecure", "--json", "overview", uri=uri)
    assert r.code == 0, r.err


def test_untrusted_certificate_is_one_line_failure(tls_plane):
    uri, _ = tls_plane
    r = ejlb("version", uri=uri, timeout=60)
    assert r.code == 1 and r.err.startswith("error:") and "Traceback" not in r.err
    missing = ejlb("--ca", "/nonexistent.pem", "version", uri=uri)
    assert missing.code == 2 and "/nonexistent.pem" in missing.err
