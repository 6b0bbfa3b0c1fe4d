"""TLS to the control plane (ejfats://): CA file, and --insecure (trust the presented certificate)."""
import shutil
import subprocess

import pytest

from control_tools import config, control_plane
from ejlb.control.client import LBManager
from ejlb.control.errors import LBError

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not available")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(d / "cert.pem"), str(d / "key.pem")


def test_tls_with_ca_file_and_insecure(cert):
    crt, key = cert
    with control_plane(config(tls_cert=crt, tls_key=key)) as cp:
        assert cp.admin_uri.startswith("ejfats://")
        with LBManager(cp.admin_uri, ca_file=crt) as m:
            r = m.reserve("tls")
            assert r.uri.tls and r.reply.ejfatUri.startswith("ejfats://")
        with LBManager(cp.admin_uri, insecure=True) as m:
            assert m.get(r.lb_id).lbId == r.lb_id
        with LBManager(cp.admin_uri, timeout=2) as m:  # system CAs do not trust a self-signed cert
            with pytest.raises(LBError):
                m.version()
        with LBManager(cp.admin_uri.replace("ejfats", "ejfat"), timeout=2) as m:  # plaintext to a TLS port
            with pytest.raises(LBError):
                m.version()
