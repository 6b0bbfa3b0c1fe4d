"""The asyncio gRPC server shell: grpc.aio in front of the synchronous servicer.

grpcio's synchronous server hands every call from its polling thread to a pool thread, and that
hand-off (GIL and thread switches) costs more than ejlb's handling of a state report. The asyncio
server runs calls on one event loop instead. The servicer stays synchronous (`servicer.py`: the
web server and tests call it directly) and this shell adapts it:

- `SendState` and `Version` run **inline** on the loop when `service.lock` is free at once (a
  non-blocking acquire): a few µs of work, no thread hop. When another thread holds the lock (the
  controller tick, a Reserve writing SQLite, the web server) they go to the pool instead, so the
  loop never waits on the lock.
- Every other RPC runs in the pool (`rpc_threads` threads): they may write SQLite, bind sync
  sockets or build large replies, and must not stall the loop.
- The loop is one per process (`shared_loop`), on a daemon thread, shared by every ControlPlane of
  the process: grpc.aio binds its completion queue to the first loop it meets, so servers on
  several loops would wake each other's loops through `call_soon_threadsafe`, and a stopped loop
  would strand the others.

The wire behaviour is the servicer's: the same statuses, messages, metrics and audit lines.
"""
from __future__ import annotations

import asyncio
import functools
import os
import threading
from concurrent import futures
from typing import Callable

import grpc

from ejlb.control import loadbalancer_pb2_grpc as pb_grpc
from ejlb.control.servicer import LoadBalancerServicer

INLINE = frozenset({"SendState", "Version"})  # cheap: on the loop when the service lock is free
RPCS = tuple(n for n in dir(pb_grpc.LoadBalancerServicer) if n[0].isupper())

_shared: tuple[int, asyncio.AbstractEventLoop] | None = None
_shared_lock = threading.Lock()


def shared_loop() -> asyncio.AbstractEventLoop:
    """The process's gRPC event loop, started on first use (again in a forked child)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="ejlb-grpc-loop", daemon=True).start()
            _shared = (os.getpid(), loop)
        return _shared[1]


def run(coro, timeout: float | None = None):
    """Run a coroutine on the shared loop from any other thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, shared_loop()).result(timeout)


class Aborted(Exception):
    """What the adapter context's `abort` raises inside the synchronous servicer."""

    def __init__(self, code: grpc.StatusCode, detail: str):
        super().__init__(code, detail)
        self.code, self.detail = code, detail


class CallContext:
    """The part of grpc.ServicerContext the servicer uses, captured on the loop (peer, metadata)
    so that a pool thread never touches the asyncio call object."""

    __slots__ = ("_peer", "_metadata")

    def __init__(self, context: grpc.aio.ServicerContext):
        self._peer = context.peer()
        self._metadata = context.invocation_metadata()

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self):
        return self._metadata

    def abort(self, code: grpc.StatusCode, detail: str):
        raise Aborted(code, detail)


def _call(method: Callable, request, ctx: CallContext):
    """The servicer's method; its abort becomes a value, not an exception across the thread hop."""
    try:
        return method(request, ctx), None
    except Aborted as a:
        return None, a


class AioServicer(pb_grpc.LoadBalancerServicer):
    """Every RPC of the service as a coroutine delegating to a synchronous `LoadBalancerServicer`."""

    def __init__(self, servicer: LoadBalancerServicer, pool: futures.Executor):
        self.servicer = servicer
        self.pool = pool
        lock = servicer.svc.lock
        for name in RPCS:
            method = getattr(servicer, name)

            async def rpc(request, context, method=method, inline=name in INLINE):
                ctx = CallContext(context)
                if inline and lock.acquire(blocking=False):
                    try:
                        reply, aborted = _call(method, request, ctx)
                    finally:
                        lock.release()
                else:
                    reply, aborted = await asyncio.get_running_loop().run_in_executor(
                        self.pool, _call, method, request, ctx)
                if aborted is not None:
                    await context.abort(aborted.code, aborted.detail)
                return reply

            setattr(self, name, functools.update_wrapper(rpc, method))


async def bind_server(servicer: LoadBalancerServicer, pool: futures.Executor, address: str,
                      credentials: grpc.ServerCredentials | None) -> tuple[grpc.aio.Server, int]:
    """Create and bind an asyncio server on the running loop, not started yet: (server, bound
    port). A failed bind raises OSError after releasing the server."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_LoadBalancerServicer_to_server(AioServicer(servicer, pool), server)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as e:  # grpcio reports a failed bind this way
        await server.stop(None)
        raise OSError(f"listen={address}: cannot bind the gRPC port ({e})") from None
    if not port:
        await server.stop(None)
        raise OSError(f"listen={address}: cannot bind the gRPC port")
    return server, port
