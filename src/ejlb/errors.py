"""ejlb's one error hierarchy (as h11's ProtocolError family): every error ejlb raises on purpose
derives from `EjlbError`, and also from the builtin class callers already catch.

    EjlbError
      FieldError (ValueError)      a value ejlb does not accept; `.field`, `.value`, message names both
        WireError                  ...in header bytes or header fields (ejlb.wire): only wire facts
        ArgumentError              ...in an argument or option (rate_gbps, queue_size, threads, ...)
      Closed                       the Sender or Receiver is closed (ejlb.shim.events)
      and each component's own: URIError, ConfigError, TableError, ParseError, CalendarError,
      BackendError, LBError (one class per gRPC status), SendQueueFull, ...

Pure: imports nothing of ejlb, so every module can.
"""
from __future__ import annotations


class EjlbError(Exception):
    """Base of every error ejlb raises on purpose."""


class FieldError(EjlbError, ValueError):
    """A value ejlb does not accept; the message names the field and the value."""

    def __init__(self, field: str, value, reason: str):
        self.field = field
        self.value = value
        super().__init__(f"{field}={value!r}: {reason}")


class ArgumentError(FieldError):
    """An argument or option (not wire bytes) with a value ejlb does not accept."""


class Closed(EjlbError):
    """The Sender or Receiver was closed (SenderClosed, ReceiverClosed)."""
