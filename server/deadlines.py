"""The client's deadline of an RPC, as the services and the Mine stream read it."""

from __future__ import annotations

import time

import grpc

NO_DEADLINE = 1e7  # grpc reports a huge time_remaining() when the client set no deadline


def remaining(context: grpc.ServicerContext) -> float | None:
    """Seconds left before the client's deadline (None: no deadline)."""
    left = context.time_remaining()
    return None if left is None or left > NO_DEADLINE else left


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The client's deadline on the ``time.monotonic`` clock (None: no deadline)."""
    left = remaining(context)
    return None if left is None else time.monotonic() + left
