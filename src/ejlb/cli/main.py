"""The `ejlb` command. Global options live here; each verb lives in a `cmd_*.py` module of this
package that exposes `COMMANDS` (a list of click commands), found at start-up so verbs can be added
without touching this file.

Exit codes: 0 ok; 1 runtime failure (peer error, I/O); 2 bad arguments or input (click's usage
errors too); 3 permission / authentication refused by the control plane; 4 not found; 130 interrupted.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from dataclasses import dataclass

import click

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_DENIED, EXIT_NOT_FOUND, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class CLIError(click.ClickException):
    """One clear line for the operator, with a documented exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Options:
    uri: str | None
    ca: str | None
    insecure: bool
    family: int | None
    json: bool
    debug: bool

    def ejfat_uri(self):
        """The URI from --uri or EJFAT_URI, parsed; a CLIError naming the problem otherwise."""
        from ejlb.uri import EjfatURI, URIError

        try:
            return EjfatURI.parse(self.uri) if self.uri else EjfatURI.from_env()
        except URIError as e:
            raise CLIError(f"uri: {e}", EXIT_USAGE) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--uri", envvar="EJFAT_URI", help="EJFAT URI of the control plane (default: $EJFAT_URI).")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False), help="CA certificate for ejfats:// URIs.")
@click.option("--insecure", is_flag=True, help="TLS without certificate verification.")
@click.option("-4", "family", flag_value=4, help="Use IPv4 data/sync addresses.")
@click.option("-6", "family", flag_value=6, help="Use IPv6 data/sync addresses.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="ejlb")
@click.pass_context
def cli(ctx, uri, ca, insecure, family, as_json, debug):
    """ejlb: EJFAT-compatible stateless UDP load balancing for instrument data."""
    ctx.obj = Options(uri=uri, ca=ca, insecure=insecure, family=family, json=as_json, debug=debug)
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG)


def _load_commands() -> None:
    import ejlb.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"ejlb.cli.{info.name}")
            for command in getattr(module, "COMMANDS", ()):
                cli.add_command(command)


_load_commands()


def exit_code_for(exc: BaseException) -> int:
    """The one mapping from library exceptions to exit codes: control-plane refusals (3), unknown
    load balancer / session / token (4), arguments the peer or a parser rejected (2), else 1."""
    errors = sys.modules.get("ejlb.control.errors")  # not imported -> cannot be one of its errors
    if errors is not None and isinstance(exc, errors.LBError):
        if isinstance(exc, (errors.PermissionDenied, errors.Unauthenticated)):
            return EXIT_DENIED
        if isinstance(exc, errors.NotFound):
            return EXIT_NOT_FOUND
        if isinstance(exc, errors.InvalidArgument):
            return EXIT_USAGE
        return EXIT_FAILURE
    uri = sys.modules.get("ejlb.uri")
    if uri is not None and isinstance(exc, uri.URIError):
        return EXIT_USAGE
    return EXIT_FAILURE


def _one_line(exc: BaseException) -> str:
    errors = sys.modules.get("ejlb.control.errors")
    if errors is not None and isinstance(exc, errors.LBError):
        what = {EXIT_DENIED: "refused", EXIT_NOT_FOUND: "not found", EXIT_USAGE: "invalid argument"}
        return f"error: {what.get(exit_code_for(exc), 'control plane')}: {exc}"
    return f"error: {type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if not debug:  # gRPC's C core logs handshake failures itself; the error line below says it once
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        cli.main(args=argv, prog_name="ejlb", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # one clear line; the traceback too with --debug
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(_one_line(e), err=True)
        sys.exit(exit_code_for(e))
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
