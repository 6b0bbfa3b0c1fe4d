"""`ejlb serve`: the control plane and a data plane in one process.

The data plane (default: the software LB) is created here and handed to the control plane, so it
outlives control-plane restarts: SIGHUP restarts the control plane from its database (reservations,
sessions and tables resume) while datagrams keep flowing with the installed tables. SIGTERM/SIGINT
stop both cleanly. The admin URI is printed on stdout (one line); logs go to stderr.
"""
from __future__ import annotations

import logging
import signal
import threading

import click

from ejlb.cli.main import EXIT_FAILURE, EXIT_USAGE, CLIError
from ejlb.cli.params import parse_host_port, parse_port_range

log = logging.getLogger("ejlb.serve")

_INSTANCE_KEYS = ("lb_id", "ipv4", "ipv6", "mac", "ports", "sync_port")


def parse_instance(text: str) -> dict:
    """'lb_id=0,ipv4=10.0.0.1,ipv6=fd00::1,ports=19522-19529,mac=02:..' -> InstanceConfig kwargs."""
    out: dict = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _INSTANCE_KEYS:
            raise CLIError(f"--instance {text!r}: {part!r} is not one of {', '.join(k + '=' for k in _INSTANCE_KEYS)}",
                           EXIT_USAGE)
        value = value.strip()
        if key == "ports":
            try:
                out["data_min_port"], out["data_max_port"] = parse_port_range(value)
            except ValueError as e:
                raise CLIError(f"--instance ports={e}", EXIT_USAGE) from None
        elif key in ("lb_id", "sync_port"):
            try:
                out[key] = int(value)
            except ValueError:
                raise CLIError(f"--instance {key}={value!r}: expected an integer", EXIT_USAGE) from None
        else:
            out[key] = None if value.lower() in ("", "none") else value
    return out


def _host_port(flag: str, value: str) -> dict:
    try:
        host, port = parse_host_port(value)
    except ValueError as e:
        raise CLIError(f"{flag} {e}", EXIT_USAGE) from None
    return {"host": host, "port": port}


def build_config(config_file, listen, backend, db, admin_token, instances, sync_ipv4, sync_ipv6, metrics_port,
                 controller_period, balancer=None, http=None):
    from ejlb.control.config import ConfigError, ControlConfig

    try:
        data = {}
        if config_file:
            import yaml

            try:
                data = yaml.safe_load(open(config_file).read()) or {}
            except (OSError, yaml.YAMLError) as e:
                raise CLIError(f"--config {config_file}: {e}", EXIT_USAGE) from None
            if not isinstance(data, dict):
                raise CLIError(f"--config {config_file}: the configuration must be a mapping", EXIT_USAGE)
        if listen:
            data["listen"] = _host_port("--listen", listen)
        if http:
            data["http"] = _host_port("--http", http)
        flags = dict(backend=backend, db=db, admin_token=admin_token, sync_ipv4=sync_ipv4, sync_ipv6=sync_ipv6,
                     metrics_port=metrics_port, controller_period=controller_period, balancer=balancer)
        data.update({k: v for k, v in flags.items() if v is not None})
        if instances:
            data["instances"] = [parse_instance(i) for i in instances]
        return ControlConfig.from_dict(data)
    except ConfigError as e:
        raise CLIError(f"configuration: {e}", EXIT_USAGE) from None


@click.command()
@click.option("-c", "--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML configuration (see ejlb.control.config); flags override it.")
@click.option("--listen", help="gRPC HOST:PORT (default 127.0.0.1:18008; port 0 = ephemeral).")
@click.option("--backend", help="Data plane: software (default), reference, memory, fpga, fpga-sim, xdp, snp4 (see --dataplane).")
@click.option("--threads", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Software data plane worker threads (SO_REUSEPORT).")
@click.option("--bitfile", type=click.Path(exists=True, dir_okay=False),
              help="FPGA overlay (.bit with its .hwh) for --backend fpga.")
@click.option("--interface", help="Network interface the xdp backend attaches to.")
@click.option("--dataplane", "dataplane_url", metavar="URL",
              help="Program LB nodes (ejlb lb-node) or SmartNICs instead of an in-process data plane: "
                   "snp4://TOKEN@host:port[,host:port...] (snp4s:// for TLS).")
@click.option("--node-process", is_flag=True,
              help="Run the data plane (--backend, default software) as a separate local ejlb lb-node that "
                   "keeps forwarding if this process dies; found again through --db on restart.")
@click.option("--dataplane-ca", type=click.Path(exists=True, dir_okay=False),
              help="CA certificate (PEM) that snp4s:// nodes must present a certificate from.")
@click.option("--db", help="SQLite database (default: in memory, nothing survives a restart).")
@click.option("--admin-token", envvar="EJLB_ADMIN_TOKEN", help="Root admin token (default: generated).")
@click.option("--instance", "instances", multiple=True, metavar="SPEC",
              help="LB instance, repeatable: lb_id=0,ipv4=A,ipv6=B,ports=MIN-MAX,mac=M,sync_port=P.")
@click.option("--sync-ipv4", help="Address the sync listeners bind (IPv4).")
@click.option("--sync-ipv6", help="Address the sync listeners bind (IPv6).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve Prometheus /metrics on this port.")
@click.option("--http", metavar="HOST:PORT",
              help="Serve the web dashboard and REST API here (docs/rest.md; TLS with --config's tls).")
@click.option("--controller-period", type=float, help="Seconds between controller ticks (default 1).")
@click.option("--balancer", type=click.Choice(["capacity", "signal"]),
              help="Slot allocation: capacity (default; follows measured worker capacity) or signal "
                   "(the deployed rule: additive control signal).")
@click.option("--uri-file", type=click.Path(dir_okay=False, writable=True),
              help="Also write the admin URI to this file (mode 0600).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def serve(config_file, listen, backend, threads, bitfile, interface, dataplane_url, node_process, dataplane_ca, db, admin_token, instances, sync_ipv4, sync_ipv6, metrics_port,
          http, controller_period, balancer, uri_file, log_level):
    """Run the control plane with a data plane. SIGHUP restarts the control plane (data plane keeps
    forwarding); SIGTERM/SIGINT shut down."""
    from ejlb.control.server import ControlPlane
    from ejlb.dataplane.backends import BackendError, create_backend

    logging.basicConfig(level=getattr(logging, log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if dataplane_url:
        if backend not in (None, "snp4"):
            raise CLIError(f"--dataplane with --backend {backend}: the nodes are the data plane; drop one", EXIT_USAGE)
        backend = "snp4"
    config = build_config(config_file, listen, backend, db, admin_token, instances, sync_ipv4, sync_ipv6,
                          metrics_port, controller_period, balancer, http)
    if node_process:
        if dataplane_url:
            raise CLIError("--node-process with --dataplane: the node is either local or given; drop one", EXIT_USAGE)
        dataplane_url = _local_node(config, threads, interface, bitfile)
        config.backend = "snp4"
    options = {"software": {"threads": threads}, "fpga": {"bitfile": bitfile},
               "xdp": {"interface": interface},
               "snp4": {"url": dataplane_url, "ca_file": dataplane_ca}}.get(config.backend, {})
    try:
        dataplane = create_backend(config.backend, config, **options)
    except (BackendError, ValueError) as e:
        raise CLIError(f"backend: {e}", EXIT_USAGE) from None
    except OSError as e:
        raise CLIError(f"backend {config.backend}: {e}", EXIT_FAILURE) from None

    stop, restart = threading.Event(), threading.Event()

    def on_signal(signum, _frame):
        (restart if signum == signal.SIGHUP else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    cp = web = None
    try:
        cp = _start(ControlPlane, config, dataplane)
        if config.http_port is not None:
            web = _start_web(cp, config)
        uri = cp.admin_uri
        click.echo(uri)
        if uri_file:
            import os

            fd = os.open(uri_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(uri + "\n")
        log.info("serving: backend %s, %d instance(s); SIGHUP restarts the control plane, SIGTERM stops",
                 config.backend, len(config.instances))
        while not stop.is_set():
            if restart.wait(0.2):
                restart.clear()
                if config.db == ":memory:":
                    # a new control plane would start empty and wipe the tables the data plane forwards with
                    log.warning("SIGHUP ignored: restarting needs a persistent --db (state is in memory)")
                    continue
                log.info("SIGHUP: restarting the control plane; the data plane keeps forwarding")
                try:
                    cp.stop()
                except Exception:  # a half-stopped control plane must not take the data plane down
                    log.exception("control plane stop failed; starting a new one anyway")
                # the same port, so clients and the printed URI stay valid
                config.port, cp = cp.port, None
                cp = _start(ControlPlane, config, dataplane)
                if web is not None:  # same port, browsers stay logged in
                    web.attach(cp)
                log.info("control plane restarted: %d reservations resumed", len(cp.service.reservations))
    finally:
        log.info("shutting down")
        if web is not None:
            web.stop()
        if cp is not None:
            cp.stop()
        dataplane.close()
        if node_process:
            from ejlb.cli import node_process as local

            local.stop(config.db)
        log.info("stopped")


def _local_node(config, threads, interface, bitfile) -> str:
    from ejlb.cli import node_process as local
    from ejlb.cli.cmd_node import NODE_BACKENDS

    if config.backend not in NODE_BACKENDS:
        raise CLIError(f"--node-process --backend {config.backend}: a node runs one of {', '.join(NODE_BACKENDS)}",
                       EXIT_USAGE)
    ranges = {(i.data_min_port, i.data_max_port) for i in config.instances}
    if len(ranges) > 1:
        raise CLIError("--node-process: instances with different data ports; a node listens on one range "
                       f"for every LB (got {sorted(ranges)})", EXIT_USAGE)
    (lo, hi), = ranges or {(19522, 19522)}
    args = ["--ports", f"{lo}-{hi}", "--threads", str(threads)]
    args += ["--interface", interface] if interface else []
    args += ["--bitfile", bitfile] if bitfile else []
    return local.ensure(config.db, config.backend, args)


def _start(cls, config, dataplane):
    from ejlb.dataplane.metrics import CountersCollector

    try:
        cp = cls(config, backend=dataplane)
        cp.metrics.registry.register(CountersCollector(dataplane))  # data-plane counters on /metrics too
        return cp.start()
    except OSError as e:
        dataplane.close()
        raise CLIError(f"serve: {e}", EXIT_FAILURE) from None


def _start_web(cp, config):
    from ejlb.web.app import WebServer

    try:
        web = WebServer(cp, config.http_host or config.host, config.http_port, config.tls_cert, config.tls_key)
        web.start()
    except OSError as e:
        cp.stop()
        raise CLIError(f"serve: {e}", EXIT_FAILURE) from None
    log.info("web dashboard and REST API on %s", web.url)
    return web


COMMANDS = [serve]
