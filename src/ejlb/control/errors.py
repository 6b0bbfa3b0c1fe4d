"""Control-plane errors, shared by server and client: each class is one gRPC status code.

The server raises them from its core (the servicer turns them into a status + detail); the client
turns a received status back into the same class, with the RPC name appended to the message.
"""
from __future__ import annotations

import grpc

from ejlb.errors import EjlbError


class LBError(EjlbError):
    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, rpc: str | None = None):
        self.detail = message
        self.rpc = rpc
        super().__init__(f"{message} ({rpc})" if rpc else message)


class Unauthenticated(LBError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LBError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(LBError):
    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(LBError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unavailable(LBError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(LBError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(LBError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(LBError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE = {cls.code: cls for cls in (
    Unauthenticated, PermissionDenied, NotFound, InvalidArgument, Unavailable,
    ResourceExhausted, FailedPrecondition, DeadlineExceeded,
)}


def from_rpc_error(err: grpc.RpcError, rpc: str) -> LBError:
    """The LBError subclass for a failed call (LBError itself for codes without a class)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    detail = (err.details() if hasattr(err, "details") else None) or (code.name if code else str(err))
    exc = _BY_CODE.get(code, LBError)(detail, rpc)
    if exc.__class__ is LBError:
        exc.code = code
    return exc
