"""Token tree and permission checks: pure (no storage, no gRPC).

Scopes nest global ⊃ load balancer (an LB instance) ⊃ reservation ⊃ session. A grant covers a
need when its level is at least the needed level and its scope is on the needed resource's
lineage. Levels are totally ordered READ_ONLY < REGISTER < RESERVE < UPDATE: UPDATE implies all,
RESERVE implies REGISTER (the documented intent) and READ_ONLY, REGISTER implies READ_ONLY.

Tokens are 256-bit random secrets; only their SHA-256 is stored, so a leaked database holds no
usable token. Ancestry is checked on token *ids* (never names).
"""
from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence  # abc: isinstance is 2.5x cheaper than typing's
from dataclasses import dataclass

from ejlb.control.errors import InvalidArgument, Unauthenticated
from ejlb.control.validate import decimal_id


class Resource(enum.IntEnum):  # TokenPermission.ResourceType values
    ALL = 0
    LOAD_BALANCER = 1
    RESERVATION = 2
    SESSION = 3


class Level(enum.IntEnum):  # TokenPermission.PermissionType values
    READ_ONLY = 0
    REGISTER = 1
    RESERVE = 2
    UPDATE = 3


@dataclass(frozen=True)
class Grant:
    resource: Resource
    resource_id: str  # "" for ALL; decimal id otherwise
    level: Level

    @classmethod
    def make(cls, resource: int, resource_id: str, level: int) -> "Grant":
        """Validated grant from wire values; InvalidArgument names the bad field."""
        try:
            r = Resource(resource)
        except ValueError:
            raise InvalidArgument(f"resourceType={resource!r}: must be 0..3") from None
        try:
            lv = Level(level)
        except ValueError:
            raise InvalidArgument(f"permission={level!r}: must be 0..3") from None
        if r is Resource.ALL:
            return cls(r, "", lv)
        try:
            return cls(r, str(decimal_id("resourceId", resource_id)), lv)
        except InvalidArgument as e:
            raise InvalidArgument(f"{e.detail} for {r.name}") from None


# A resource's lineage: its own scope and every enclosing one, e.g. for session 9 of reservation 4
# on LB instance 1: ((ALL, ""), (LOAD_BALANCER, "1"), (RESERVATION, "4"), (SESSION, "9")).
Lineage = Sequence[tuple[Resource, str]]

GLOBAL: Lineage = ((Resource.ALL, ""),)
_TOKEN = re.compile(r"[\x21-\x7e]+")  # one run of visible ASCII: the bearer token


def lineage(lb: int | None = None, reservation: int | None = None, session: int | None = None) -> Lineage:
    out = [(Resource.ALL, "")]
    if lb is not None:
        out.append((Resource.LOAD_BALANCER, str(lb)))
    if reservation is not None:
        out.append((Resource.RESERVATION, str(reservation)))
    if session is not None:
        out.append((Resource.SESSION, str(session)))
    return tuple(out)


def covers(grants: Iterable[Grant], need: Lineage, level: Level) -> bool:
    scopes = set(need)
    return any(g.level >= level and (g.resource, g.resource_id) in scopes for g in grants)


def grant_within(granted: Grant, held: Iterable[Grant], resolve) -> bool:
    """May a holder of `held` delegate `granted`? Only if a held grant covers its scope at its level.
    `resolve(resource, id)` returns the lineage of that resource (None when it does not exist;
    then only a global grant can cover it)."""
    target = resolve(granted.resource, granted.resource_id)
    if target is None:
        target = GLOBAL if granted.resource is Resource.ALL else ((granted.resource, granted.resource_id),)
    return covers(held, target, granted.level)


def new_secret() -> str:
    return secrets.token_hex(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Every RPC hashes its caller's token and 1000 workers present the same 1000 tokens ten times a
# second: remember the most recent (bounded, pure: a revoked token's hash simply finds no token).
presented_hash = functools.lru_cache(maxsize=8192)(token_hash)


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | Mapping | None) -> str:
    """The token of the `authorization` metadata, parsed as RFC 7235 / 6750 credentials with the
    tolerance HTTP servers show (the rule the control README states):

    - exactly one `authorization` entry (two are ambiguous: refused, not one picked);
    - spaces and tabs around the value are ignored (RFC 9110 strips a field value's OWS);
    - the scheme is `Bearer` in any case (`bearer`, `BEARER`), then one or more spaces or tabs;
    - then exactly one token: visible ASCII, no whitespace inside (`Bearer a b` is refused).

    Missing → Unauthenticated; anything else malformed → InvalidArgument. Messages never echo the
    token, since refused calls are logged."""
    items = metadata.items() if isinstance(metadata, Mapping) else (metadata or ())
    values = [v for k, v in items if k.lower() == "authorization"]
    if not values:
        raise Unauthenticated("authorization metadata missing: expected 'Bearer <token>'")
    if len(values) > 1:
        raise InvalidArgument(f"authorization: given {len(values)} times, expected once")
    return _credentials(values[0].decode("latin-1") if isinstance(values[0], bytes) else values[0])


@functools.lru_cache(maxsize=8192)  # the same few thousand headers over and over (refusals are not cached)
def _credentials(value: str) -> str:
    scheme, *rest = re.split(r"[ \t]+", value.strip(" \t"), maxsplit=1)
    if scheme.lower() != "bearer":
        shown = scheme if scheme.isascii() and scheme.isalpha() and len(scheme) <= 10 else "?"  # never a token
        raise InvalidArgument(f"authorization: scheme {shown!r} is not Bearer (expected 'Bearer <token>')")
    token = rest[0] if rest else ""
    if not token:
        raise InvalidArgument("authorization: empty bearer token")
    if not _TOKEN.fullmatch(token):
        raise InvalidArgument("authorization: expected exactly one token of visible ASCII after 'Bearer'")
    return token
