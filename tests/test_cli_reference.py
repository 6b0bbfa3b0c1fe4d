"""docs/cli.md documents every verb and every option that the `ejlb` command really has."""
from __future__ import annotations

import click

from cli_helpers import REPO
from ejlb.cli.main import cli
from ejlb.cli.reference import render


def _commands(group: click.Group, path: tuple[str, ...] = ("ejlb",)):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield path + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path + (name,))


# The verbs of these modules are checked option by option; verbs from other modules (serve, and any
# added later) change on their owners' schedule and are picked up when docs/cli.md is regenerated.
CHECKED_MODULES = {f"ejlb.cli.cmd_{m}" for m in ("admin", "tokens", "data", "perf", "monitor", "demo", "node")}


def test_reference_covers_every_command_and_option():
    doc = (REPO / "docs" / "cli.md").read_text()
    missing = []
    checked = 0
    for path, cmd in _commands(cli):
        if getattr(cmd.callback, "__module__", None) not in CHECKED_MODULES:
            continue
        checked += 1
        if f"`{' '.join(path)}`" not in doc:
            missing.append(" ".join(path))
        for param in cmd.params:
            for flag in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                if flag.startswith("-") and flag not in doc:
                    missing.append(f"{' '.join(path)} {flag}")
    assert checked >= 20  # every verb of those modules, groups and their subcommands
    assert not missing, f"regenerate: python -m ejlb.cli.reference > docs/cli.md (missing: {missing})"


def test_generator_lists_exit_codes_and_every_verb():
    text = render()
    for code in ("| 0 |", "| 2 |", "| 3 |", "| 4 |", "| 130 |"):
        assert code in text
    for verb in ("reserve", "status", "perf send", "perf recv", "tokens create", "monitor", "demo"):
        assert f"`ejlb {verb}`" in text
