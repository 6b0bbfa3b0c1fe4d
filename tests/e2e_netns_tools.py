"""Several hosts on one machine for end-to-end tests: network namespaces on a veth bridge, and the
roles (worker, sender, sink, client calls) run as processes inside them.

    with Topology("ejdp1234", {"lb": "10.250.0.10", "w1": "10.250.0.21"}) as topo:
        proc = topo.popen("w1", ["python", ...])

Each host namespace `<prefix>-<name>` gets `eth0` with its address; the bridge lives in a namespace
of its own (`<prefix>-sw`), so nothing touches the root namespace. Everything is deleted on exit.

Roles (`python e2e_netns_tools.py ROLE ARGS...`), each writing plain text lines:
    worker URI IP NAME OUT      a registered ejlb.Receiver; one line per event, stats at exit
    sender URI DATA_ID N SEED SECONDS OUT [MTU [FAMILY]]   N events of log-uniform size over SECONDS
    sink IP PORT OUT            counts datagrams arriving at IP:PORT (where a dead worker was)
    reserve ADMIN_URI NAME FAMILY SENDER...   reserve, then add the senders; prints the instance URI
    status URI                  JSON: [{name, slots}] of the reservation's workers
    scrape URL                  prints the text of a Prometheus endpoint
    nodestats SNP4_URL          JSON: {node address: packets its LB received}
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SUBNET_BITS = 24


def netns_available() -> str | None:
    """None if namespaces can be made here, else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 `ip` not installed"
    probe = f"ejdp-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def remove_stale(prefix: str = "ejdp") -> None:
    """Delete namespaces `<prefix>[6]<pid>-*` left by test runs that were killed (their pid is gone)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{prefix}6?(\d+)-\w+", name)
        if m and not os.path.exists(f"/proc/{m[1]}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")


class Topology:
    def __init__(self, prefix: str, hosts: dict[str, str], mtu: int = 9000, ipv6: bool = False):
        """hosts: name -> IPv4 address; with ipv6, each host also gets fd00:ed::<last IPv4 byte>."""
        self.prefix, self.hosts, self.mtu, self.ipv6 = prefix, dict(hosts), mtu, ipv6
        self.switch = f"{prefix}-sw"
        self.procs: list[subprocess.Popen] = []
        self._made: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def ip6(self, host: str) -> str:
        return f"fd00:ed::{self.hosts[host].rsplit('.', 1)[1]}"

    def __enter__(self) -> "Topology":
        remove_stale()
        try:
            self._add_ns(self.switch)
            _ip("link", "add", "br0", "mtu", str(self.mtu), "type", "bridge", ns=self.switch)
            _ip("link", "set", "br0", "up", ns=self.switch)
            for host, addr in self.hosts.items():
                ns = self.ns(host)
                self._add_ns(ns)
                _ip("link", "add", "eth0", "mtu", str(self.mtu), "netns", ns, "type", "veth", "peer", "name",
                    f"v-{host}", "mtu", str(self.mtu), "netns", self.switch)
                _ip("link", "set", f"v-{host}", "master", "br0", "up", ns=self.switch)
                _ip("addr", "add", f"{addr}/{SUBNET_BITS}", "dev", "eth0", ns=ns)
                if self.ipv6:
                    _ip("-6", "addr", "add", f"{self.ip6(host)}/64", "dev", "eth0", "nodad", ns=ns)
                _ip("link", "set", "eth0", "up", ns=ns)
                _ip("link", "set", "lo", "up", ns=ns)
        except BaseException:
            self.close()
            raise
        return self

    def _add_ns(self, name: str) -> None:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)  # a leftover of a killed run
        _ip("netns", "add", name)
        self._made.append(name)

    def popen(self, host: str, argv: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *argv], **kw)
        self.procs.append(p)
        return p

    def run(self, host: str, argv: list[str], timeout: float = 60) -> str:
        r = subprocess.run(["ip", "netns", "exec", self.ns(host), *argv], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode:
            raise RuntimeError(f"{host}: {' '.join(argv[-3:])} failed ({r.returncode}): {r.stderr[-2000:]}")
        return r.stdout

    def role(self, host: str, *args: str, timeout: float = 60) -> str:
        return self.run(host, [sys.executable, __file__, *args], timeout=timeout)

    def spawn_role(self, host: str, *args: str, **kw) -> subprocess.Popen:
        return self.popen(host, [sys.executable, __file__, *args], **kw)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._made.clear()

    def __exit__(self, *exc) -> None:
        self.close()


# --- reading what the roles wrote -------------------------------------------------------------------
def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def tagged_lines(path: Path, tag: str) -> list[list[str]]:
    if not path.exists():
        return []
    return [ln.split()[1:] for ln in path.read_text().splitlines() if ln.startswith(tag + " ")]


def stats_json(path: Path) -> dict:
    line = next(ln for ln in path.read_text().splitlines() if ln.startswith("STATS "))
    return json.loads(line.split(" ", 1)[1])


# --- event contents both ends agree on ---------------------------------------------------------------
def pattern(data_id: int, event_number: int, n: int):
    import numpy as np

    seed = np.uint64((data_id << 40) ^ (event_number * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFF))
    return ((np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B1) + seed) >> np.uint64(11)).astype(np.uint8)


# --- roles ---------------------------------------------------------------------------------------------
def _stopper():
    flag = {"stop": False}

    def handler(*_):
        flag["stop"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return flag


def role_worker(uri, ip, name, out):
    import numpy as np

    from ejlb.shim.receiver import Receiver

    flag = _stopper()
    with open(out, "w", buffering=1) as f, Receiver(uri, ip, 30000, name=name, state_period=0.1, event_timeout=1.0,
                                                   queue_size=4096) as rx:
        f.write(f"READY {time.time():.6f}\n")
        while not flag["stop"]:
            try:
                ev = rx.recv(timeout=0.2)
            except TimeoutError:
                continue
            got = np.frombuffer(ev.payload, np.uint8)
            ok = int(np.array_equal(got, pattern(ev.data_id, ev.event_number, len(got))))
            f.write(f"EV {time.time():.6f} {ev.data_id} {ev.event_number} {len(got)} {ok}\n")
        s = rx.stats()
        for lost in rx.lost_events():
            f.write(f"LOST {lost.data_id} {lost.event_number} {lost.reason}\n")
        f.write("STATS " + json.dumps(s.__dict__) + "\n")


def role_sender(uri, data_id, n, seed, seconds, out, mtu="9000", family="4"):
    import numpy as np

    from ejlb.shim.sender import Sender

    data_id, n, seconds = int(data_id), int(n), float(seconds)
    rng = np.random.default_rng(int(seed))
    sizes = np.exp(rng.uniform(0, np.log(300_000), n)).astype(np.int64)
    with open(out, "w", buffering=1) as f, Sender(uri, data_id=data_id, mtu=int(mtu), sndbuf=8 << 20,
                                                         family=int(family)) as tx:
        start = time.time()
        last_tick = 0
        for k in range(n):
            delay = start + seconds * k / n - time.time()
            if delay > 0:
                time.sleep(delay)
            tick = max(int(time.time() * 1e6), last_tick + 1)
            last_tick = tick
            tx.send(pattern(data_id, k, int(sizes[k])), event_number=k, tick=tick)
            f.write(f"SENT {data_id} {k} {tick} {sizes[k]}\n")
        s = tx.stats()
        f.write("STATS " + json.dumps({k: v for k, v in s.__dict__.items()}) + "\n")


def role_sink(ip, port, out):
    import socket

    flag = _stopper()
    s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, int(port)))
    s.settimeout(0.2)
    n, last = 0, 0.0
    with open(out, "w", buffering=1) as f:
        f.write(f"READY {time.time():.6f}\n")
        while not flag["stop"]:
            try:
                s.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            n, last = n + 1, time.time()
        f.write(f"SINK {n} {last:.6f}\n")


def role_reserve(admin, name, family, *senders):
    from ejlb.control.client import LBManager

    with LBManager(admin) as m:
        res = m.reserve(name, ip_family=family)
    with LBManager(res.uri) as m:  # the reservation's own token adds its senders (AddSenders)
        if senders:
            m.add_senders(list(senders))
        print(str(res.uri))


def role_status(uri):
    from ejlb.control.client import LBManager

    with LBManager(uri) as m:
        st = m.status()
        print(json.dumps([{"name": w.name, "slots": w.slotsAssigned} for w in st.workers]))


def role_nodestats(url):
    """JSON: per node of a snp4:// URL, {address: packets its LB received (lb_ctx_rx_pkt_counter summed)}."""
    from ejlb.node.client import NodeClient, parse_url

    u = parse_url(url)
    out = {}
    for host, port in u.nodes:
        c = NodeClient(host, port, u.token)
        out[c.address] = sum(c.stats().get("lb_ctx_rx_pkt_counter", {}).values())
        c.close()
    print(json.dumps(out))


def role_scrape(url):
    import urllib.request

    print(urllib.request.urlopen(url, timeout=10).read().decode())


if __name__ == "__main__":
    role, args = sys.argv[1], sys.argv[2:]
    globals()[f"role_{role}"](*args)
