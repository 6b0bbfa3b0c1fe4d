"""Token handlers of the LoadBalancer service: the token tree in memory (mint, revoke, ancestry) and
CreateToken, GetTokenDetails, ListChildTokens, RevokeToken. The pure rules (scopes, levels, hashing)
are in tokens.py.

Mixed into `ControlService` (service.py): the methods use its state, store, clock and lock,
and its authentication and resolution helpers; RPC methods take the caller's bearer token first.
"""
from __future__ import annotations

import time
from typing import Sequence

from ejlb.control import audit
from ejlb.control import tokens as tk
from ejlb.control import validate as check
from ejlb.control.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from ejlb.control.state import Token
from ejlb.control.tokens import Grant, Level
from ejlb.control.validate import rfc3339 as _rfc3339

ROOT_TOKEN_ID = 1
MAX_GRANTS = 64
MAX_CHILD_TOKENS = 4096  # per token: a token holder cannot grow the token table without bound


class TokenHandlers:
    def _index_token(self, t: Token) -> None:
        self.tokens[t.id] = t
        self.token_by_hash[t.hash] = t
        if t.parent_id is not None:
            self.children[t.parent_id].add(t.id)

    def _mint(self, parent: Token | None, name: str, grants: Sequence[Grant], secret: str | None = None,
              token_id: int | None = None) -> tuple[Token, str]:
        secret = secret or tk.new_secret()
        h = tk.token_hash(secret)
        created = _rfc3339(time.time())
        tid = self.store.add_token(parent.id if parent else None, name, h, created,
                                   [(int(g.resource), g.resource_id, int(g.level)) for g in grants], token_id)
        t = Token(tid, parent.id if parent else None, name, h, created, tuple(grants))
        self._index_token(t)
        return t, secret

    def _descendants(self, tid: int) -> list[int]:
        out, todo = [], list(self.children.get(tid, ()))
        while todo:
            c = todo.pop()
            out.append(c)
            todo.extend(self.children.get(c, ()))
        return sorted(out)

    def _ancestors(self, tid: int) -> list[int]:
        out, t = [], self.tokens.get(tid)
        while t is not None and t.parent_id is not None:
            out.append(t.parent_id)
            t = self.tokens.get(t.parent_id)
        return out

    def _revoke(self, tid: int | None) -> None:
        if tid is None or tid not in self.tokens or tid == ROOT_TOKEN_ID:
            return
        ids = [tid] + self._descendants(tid)
        for i in ids:
            t = self.tokens.pop(i)
            self.token_by_hash.pop(t.hash, None)
            self.children.pop(i, None)
            if t.parent_id in self.children:
                self.children[t.parent_id].discard(i)
        self.store.delete_tokens(ids)

    def create_token(self, secret: str, name: str, grants: Sequence[tuple[int, str, int]]) -> tuple[Token, str]:
        with self.lock:
            caller = self.authenticate(secret)
            name = check.name("name", name)
            if not grants or len(grants) > MAX_GRANTS:
                raise InvalidArgument(f"permissions: {len(grants)} given, need 1..{MAX_GRANTS}")
            if len(self.children.get(caller.id, ())) >= MAX_CHILD_TOKENS:
                raise ResourceExhausted(f"token {caller.id} already has {MAX_CHILD_TOKENS} child tokens")
            parsed = [Grant.make(*g) for g in grants]
            for g in parsed:
                if not tk.grant_within(g, caller.grants, self._resolve):
                    raise PermissionDenied(f"token {caller.id} ({caller.name!r}) cannot delegate "
                                           f"{g.level.name} on {g.resource.name} {g.resource_id}".rstrip())
            token, secret_out = self._mint(caller, name, parsed)
            audit.info("token created id=%s name=%r permissions=[%s] by token %s", token.id, name,
                       ", ".join(f"{g.level.name} {g.resource.name} {g.resource_id}".rstrip() for g in parsed),
                       caller.id)
            return token, secret_out

    def _target(self, caller: Token, selector: tuple[str, object] | None) -> Token:
        if selector is None or selector == ("id", 0):
            return caller
        kind, value = selector
        t = self.tokens.get(value) if kind == "id" else self.token_by_hash.get(tk.token_hash(str(value)))
        if t is None:
            raise NotFound(f"target {kind}={'<token>' if kind == 'token' else value!r}: no such token")
        return t

    def _require_self_or_ancestor(self, caller: Token, target: Token) -> None:
        if target.id != caller.id and caller.id not in self._ancestors(target.id):
            raise PermissionDenied(f"token {caller.id} is neither token {target.id} nor one of its ancestors")

    def token_details(self, secret: str, selector) -> Token:
        with self.lock:
            caller = self.authenticate(secret)
            target = self._target(caller, selector)
            self._require_self_or_ancestor(caller, target)
            return target

    def child_tokens(self, secret: str, selector) -> list[Token]:
        with self.lock:
            caller = self.authenticate(secret)
            target = self._target(caller, selector)
            self._require_self_or_ancestor(caller, target)
            return [self.tokens[i] for i in self._descendants(target.id)]

    def revoke_token(self, secret: str, selector) -> None:
        with self.lock:
            caller = self.authenticate(secret)
            target = self._target(caller, selector)
            if target.id == ROOT_TOKEN_ID:
                raise FailedPrecondition("the admin token comes from configuration; rotate it there")
            if caller.id not in self._ancestors(target.id) and not tk.covers(caller.grants, tk.GLOBAL, Level.UPDATE):
                raise PermissionDenied(f"token {caller.id} is not an ancestor of token {target.id} "
                                       "and holds no global UPDATE")
            n = len(self._descendants(target.id))
            self._revoke(target.id)
            audit.info("token revoked id=%s name=%r with %s descendants by token %s", target.id, target.name, n,
                       caller.id)
