"""`ejlb lb-node`: a standalone data plane serving ESnet's SmartNIC P4 API.

Run one per LB host; `ejlb serve --dataplane snp4://TOKEN@host:port,...` (or a deployed udplbd2
with the node in its `smartnic` list) programs them. A node forwards with its last tables when no
control plane talks to it. It prints its listen address (HOST:PORT) on stdout; SIGTERM/SIGINT stop it.
"""
from __future__ import annotations

import logging
import signal
import threading

import click

from ejlb.cli.main import EXIT_FAILURE, EXIT_USAGE, CLIError
from ejlb.cli.params import parse_host_port, parse_port_range

NODE_BACKENDS = ("software", "xdp", "fpga-sim", "fpga", "reference")


@click.command("lb-node")
@click.option("--listen", default="127.0.0.1:50051", show_default=True, help="gRPC HOST:PORT (port 0 = ephemeral).")
@click.option("--token", envvar="EJLB_NODE_TOKEN", required=True,
              help="The bearer token every caller must present (env EJLB_NODE_TOKEN).")
@click.option("--backend", type=click.Choice(NODE_BACKENDS), default="software", show_default=True,
              help="The data plane this node runs.")
@click.option("--ports", default="19522", show_default=True,
              help="Software backend: data ports (PORT or MIN-MAX) it listens on for every LB address.")
@click.option("--threads", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Software backend worker threads.")
@click.option("--interface", help="xdp backend: the interface to attach to.")
@click.option("--bitfile", type=click.Path(exists=True, dir_okay=False), help="fpga backend: the overlay.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve TLS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="The certificate's private key (PEM).")
@click.option("--name", default="ejlb-node", show_default=True, help="Device name in stats scopes and device info.")
@click.option("--state-file", type=click.Path(dir_okay=False),
              help="Keep the rules here (at most one write a second) and restore them at start, so a node "
                   "restarted while no control plane runs forwards on.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def lb_node(listen, token, backend, ports, threads, interface, bitfile, tls_cert, tls_key, name, state_file, log_level):
    """Run an LB node: one data plane behind the SmartNIC P4 gRPC API."""
    from ejlb.dataplane.backends import BackendError, create_backend
    from ejlb.dataplane.tables import NUM_LBS
    from ejlb.node.server import LBNode, NodeConfig

    logging.basicConfig(level=getattr(logging, log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        host, port = parse_host_port(listen)
    except ValueError as e:
        raise CLIError(f"--listen {e}", EXIT_USAGE) from None
    try:
        lo_hi = parse_port_range(ports)
    except ValueError as e:
        raise CLIError(f"--ports {e}", EXIT_USAGE) from None
    try:
        config = NodeConfig(host=host, port=port, token=token, tls_cert=tls_cert,
                            tls_key=tls_key, name=name, state_file=state_file)
    except ValueError as e:
        raise CLIError(f"lb-node: {e}", EXIT_USAGE) from None
    options = {"software": {"threads": threads, "ports": dict.fromkeys(range(NUM_LBS), lo_hi)},
               "xdp": {"interface": interface}, "fpga": {"bitfile": bitfile}}.get(backend, {})
    try:
        dataplane = create_backend(backend, None, **options)
    except (BackendError, ValueError) as e:
        raise CLIError(f"--backend {backend}: {e}", EXIT_USAGE) from None
    except OSError as e:
        raise CLIError(f"--backend {backend}: {e}", EXIT_FAILURE) from None

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node = LBNode(config, dataplane, backend)
    try:
        try:
            node.start()
        except OSError as e:
            raise CLIError(f"lb-node: {e}", EXIT_FAILURE) from None
        shown = f"[{config.host}]" if ":" in config.host else config.host
        click.echo(f"{shown}:{node.port}", nl=True)
        while not stop.wait(0.5):
            pass
    finally:
        node.stop()
        dataplane.close()


COMMANDS = [lb_node]
