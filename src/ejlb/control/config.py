"""Control-plane configuration: a dataclass with loopback defaults, loadable from YAML.

Example (every key optional):

    listen: {host: 127.0.0.1, port: 18008}
    advertise_host: lb.example.org   # host in the ejfatUri replies (default: the listen host)
    tls: {cert: server.pem, key: server.key}
    admin_token: s3cret            # generated and logged once if absent
    sync_ipv4: 127.0.0.1           # where sync listeners bind (reported to senders)
    sync_ipv6: "::1"
    instances:
      - {lb_id: 0, ipv4: 127.0.0.1, ipv6: "::1", mac: "02:00:00:00:00:00",
         data_min_port: 19522, data_max_port: 19522, sync_port: 19523}
    backend: software              # or memory / reference / fpga / fpga-sim
    db: /var/lib/ejlb/control.db   # default: an in-memory database (nothing survives a restart)
    controller_period: 1.0
    allow_private_workers: true
    balancer: capacity             # capacity (capacity.py) | signal (the deployed additive control signal)
    fill_gain: 0.0                 # balancer signal only: feedback from reported fill for silent workers
    sticky_calendar: true          # minimal-move calendar layout (calendar.py)
    metrics_port: null             # Prometheus /metrics on listen host (0: ephemeral)
    http: {host: 127.0.0.1, port: 8080}  # web dashboard + REST API (ejlb.web; off when absent; TLS as gRPC)
    rpc_threads: 8                 # gRPC handler threads
    cpu: null                      # core for the control plane's threads (gRPC, controller, sync); null: any
"""
from __future__ import annotations

import dataclasses
import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ejlb.dataplane.tables import NUM_LBS, LBInstance, parse_mac
from ejlb.errors import EjlbError
from ejlb.wire import DEFAULT_DATA_PORT


BALANCERS = ("capacity", "signal")


class ConfigError(EjlbError, ValueError):
    """A configuration value that cannot work; the message names the key and value."""


def _fail(key: str, value, reason: str):
    raise ConfigError(f"{key}={value!r}: {reason}")


def _port(key: str, value, allow_zero: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (0 if allow_zero else 1) <= value <= 0xFFFF:
        _fail(key, value, "must be a port number 0..65535" if allow_zero else "must be a port number 1..65535")
    return value


@dataclass(frozen=True)
class InstanceConfig:
    lb_id: int = 0
    ipv4: str | None = "127.0.0.1"
    ipv6: str | None = "::1"
    mac: str = "02:00:00:00:00:00"
    data_min_port: int = DEFAULT_DATA_PORT
    data_max_port: int = DEFAULT_DATA_PORT
    sync_port: int = 0  # 0: an ephemeral port chosen at reserve time

    def __post_init__(self) -> None:
        p = f"instances[{self.lb_id}]"
        if isinstance(self.lb_id, bool) or not isinstance(self.lb_id, int) or not 0 <= self.lb_id < NUM_LBS:
            _fail("instances.lb_id", self.lb_id, f"must be 0..{NUM_LBS - 1}")
        if self.ipv4 is None and self.ipv6 is None:
            _fail(f"{p}.ipv4", None, "an instance needs an IPv4 or an IPv6 data address")
        for key, version in (("ipv4", 4), ("ipv6", 6)):
            value = getattr(self, key)
            if value is None:
                continue
            try:
                ip = ipaddress.ip_address(str(value))
            except ValueError:
                _fail(f"{p}.{key}", value, "not an IP address")
            if ip.version != version:
                _fail(f"{p}.{key}", value, f"must be an IPv{version} address")
            object.__setattr__(self, key, str(ip))
        try:
            parse_mac(self.mac)
        except ValueError as e:
            _fail(f"{p}.mac", self.mac, str(e))
        _port(f"{p}.data_min_port", self.data_min_port, allow_zero=False)
        _port(f"{p}.data_max_port", self.data_max_port, allow_zero=False)
        if self.data_max_port < self.data_min_port:
            _fail(f"{p}.data_max_port", self.data_max_port, f"below data_min_port {self.data_min_port}")
        _port(f"{p}.sync_port", self.sync_port)

    def lb_instance(self) -> LBInstance:
        return LBInstance(self.lb_id, parse_mac(self.mac),
                          ipaddress.IPv4Address(self.ipv4) if self.ipv4 else None,
                          ipaddress.IPv6Address(self.ipv6) if self.ipv6 else None)


@dataclass
class ControlConfig:
    host: str = "127.0.0.1"
    port: int = 18008  # 0: ephemeral, see ControlPlane.port
    advertise_host: str | None = None  # host put in the URIs we hand out (default: host)
    tls_cert: str | None = None
    tls_key: str | None = None
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    sync_ipv4: str | None = "127.0.0.1"
    sync_ipv6: str | None = "::1"
    instances: tuple[InstanceConfig, ...] = (InstanceConfig(),)
    backend: str = "software"
    db: str = ":memory:"
    controller_period: float = 1.0
    allow_private_workers: bool = True
    balancer: str = "capacity"
    fill_gain: float = 0.0
    sticky_calendar: bool = True
    metrics_port: int | None = None
    http_host: str | None = None  # web dashboard + REST API (ejlb serve); default: the gRPC host
    http_port: int | None = None  # None: no web server; 0: ephemeral
    rpc_threads: int = 8  # gRPC handler threads (the GIL makes more rarely faster)
    # Pin the control plane's threads to one core: grpcio's server hands each call between threads,
    # which costs far less on one core than across cores (server.py)
    cpu: int | None = None

    def __post_init__(self) -> None:
        self.instances = tuple(i if isinstance(i, InstanceConfig) else InstanceConfig(**i) for i in self.instances)
        ids = [i.lb_id for i in self.instances]
        if len(set(ids)) != len(ids):
            _fail("instances.lb_id", ids, "LB instance ids must be unique")
        if not self.instances:
            _fail("instances", [], "at least one LB instance is needed")
        _port("port", self.port)
        if isinstance(self.rpc_threads, bool) or not isinstance(self.rpc_threads, int) or not 1 <= self.rpc_threads <= 256:
            _fail("rpc_threads", self.rpc_threads, "must be 1..256")
        if self.metrics_port is not None:
            _port("metrics_port", self.metrics_port)
        if self.http_port is not None:
            _port("http.port", self.http_port)
        if self.cpu is not None and (isinstance(self.cpu, bool) or not isinstance(self.cpu, int) or self.cpu < 0):
            _fail("cpu", self.cpu, "must be a core number ≥ 0 (null: not pinned)")
        if not isinstance(self.admin_token, str) or len(self.admin_token) < 8 or \
                not all("\x21" <= c <= "\x7e" for c in self.admin_token):  # one bearer token: no spaces
            _fail("admin_token", "<hidden>", "must be at least 8 characters of visible ASCII, no spaces")
        if (self.tls_cert is None) != (self.tls_key is None):
            _fail("tls", (self.tls_cert, self.tls_key), "give both cert and key, or neither")
        if not isinstance(self.controller_period, (int, float)) or not 0.01 <= self.controller_period <= 60:
            _fail("controller_period", self.controller_period, "must be 0.01..60 seconds")
        if self.balancer not in BALANCERS:
            _fail("balancer", self.balancer, f"must be one of {', '.join(BALANCERS)}")
        for key in ("sync_ipv4", "sync_ipv6"):
            value = getattr(self, key)
            if value is not None:
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    _fail(key, value, "not an IP address")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def instance(self, lb_id: int) -> InstanceConfig:
        return next(i for i in self.instances if i.lb_id == lb_id)

    @classmethod
    def from_dict(cls, data: dict) -> "ControlConfig":
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        flat = {}
        listen = data.pop("listen", None) or {}
        if listen:
            flat.update({k: listen[k] for k in ("host", "port") if k in listen})
            if set(listen) - {"host", "port"}:
                _fail("listen", sorted(set(listen) - {"host", "port"}), "unknown keys (host, port)")
        http = data.pop("http", None) or {}
        if http:
            if not isinstance(http, dict) or set(http) - {"host", "port"}:
                _fail("http", http, "must be a mapping with keys host, port")
            flat.update({f"http_{k}": v for k, v in http.items()})
        tls = data.pop("tls", None) or {}
        if tls:
            flat.update(tls_cert=tls.get("cert"), tls_key=tls.get("key"))
        for key, value in data.items():
            if key not in known:
                _fail(key, value, f"unknown configuration key (known: {', '.join(sorted(known))})")
            flat[key] = value
        if "instances" in flat:
            if not isinstance(flat["instances"], list):
                _fail("instances", flat["instances"], "must be a list of instances")
            inst_keys = {f.name for f in dataclasses.fields(InstanceConfig)}
            for i, item in enumerate(flat["instances"]):
                if not isinstance(item, dict) or set(item) - inst_keys:
                    _fail(f"instances[{i}]", item, f"must be a mapping with keys among {sorted(inst_keys)}")
        try:
            return cls(**flat)
        except TypeError as e:
            raise ConfigError(str(e)) from None

    @classmethod
    def from_file(cls, path: str | Path) -> "ControlConfig":
        try:
            data = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if data is not None and not isinstance(data, dict):
            _fail(str(path), type(data).__name__, "the configuration must be a mapping")
        return cls.from_dict(data or {})
