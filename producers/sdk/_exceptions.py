"""The SDK's own exceptions (invalid events raise :class:`funnel.events.InvalidEvent`)."""

from __future__ import annotations

__all__ = ["ClientClosed", "QueueFull"]


class QueueFull(Exception):
    """``max_queue`` events are held (the destination is slow or down); nothing was queued."""


class ClientClosed(RuntimeError):
    """The client was closed; it takes no more events."""
