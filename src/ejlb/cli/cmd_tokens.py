"""`ejlb tokens create|list|children|revoke`: the control plane's token tree."""
from __future__ import annotations

import click

from ejlb.cli import render
from ejlb.cli.params import PERMISSION, RESOURCE_TYPES, PERMISSION_TYPES
from ejlb.cli.session import current_options, manager

_RESOURCE_NAMES = {v: k for k, v in RESOURCE_TYPES.items() if k != "load_balancer"}
_LEVEL_NAMES = {v: k for k, v in PERMISSION_TYPES.items() if k != "read"}
TOKEN_COLUMNS = ("id", "name", "permissions", "created")


def _target(text: str | None):
    """TARGET: a numeric token id, or a token string; absent = the caller's own token."""
    if text is None:
        return None
    return int(text) if text.isdigit() else text


def _permission_text(p) -> str:
    kind = _RESOURCE_NAMES.get(int(p.resourceType), str(p.resourceType))
    scope = kind if not p.resourceId else f"{kind}:{p.resourceId}"
    return f"{scope}:{_LEVEL_NAMES.get(int(p.permission), str(p.permission))}"


def _details_rows(tokens) -> list[tuple]:
    return [(t.id, t.name, ", ".join(_permission_text(p) for p in t.permissions), t.created_at) for t in tokens]


@click.group()
def tokens():
    """Create, inspect and revoke control-plane tokens."""


@tokens.command()
@click.argument("name")
@click.option("-p", "--permission", "permissions", type=PERMISSION, multiple=True, required=True,
              help="TYPE[:ID]:LEVEL, TYPE in all|lb|reservation|session, LEVEL in "
                   "read_only|register|reserve|update (repeatable), e.g. -p reservation:3:read_only.")
def create(name, permissions):
    """Mint a child token of the caller's token."""
    opts = current_options()
    with manager(opts) as m:
        reply = m.create_token(name, list(permissions))
    if opts.json:
        render.print_json(reply)
    else:
        click.echo(reply.token)
        if getattr(reply, "ejfatUri", ""):
            click.echo(f"EJFAT_URI={reply.ejfatUri}", err=True)


@tokens.command("list")
@click.argument("target", required=False)
def list_(target):
    """Permissions of TARGET (token id or token; default: the caller's token)."""
    opts = current_options()
    with manager(opts) as m:
        token = m.list_token_permissions(_target(target))
    if opts.json:
        render.print_json(token)
    else:
        render.console().print(render.grid("token", TOKEN_COLUMNS, _details_rows([token])))


@tokens.command()
@click.argument("target", required=False)
def children(target):
    """All descendants of TARGET (default: the caller's token)."""
    opts = current_options()
    with manager(opts) as m:
        items = m.list_child_tokens(_target(target))
    if opts.json:
        render.print_json(items)
    else:
        render.console().print(render.grid("child tokens", TOKEN_COLUMNS, _details_rows(items)))


@tokens.command()
@click.argument("target")
def revoke(target):
    """Revoke TARGET (token id or token) and all its descendants."""
    opts = current_options()
    with manager(opts) as m:
        m.revoke_token(_target(target))
    if opts.json:
        render.print_json({"revoked": target})
    else:
        click.echo(f"revoked token {target} and its descendants")


COMMANDS = [tokens]
