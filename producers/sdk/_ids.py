"""Event ids: stable across retries, deterministic for a business fact with a key."""

from __future__ import annotations

import uuid

__all__ = ["EVENT_ID_NAMESPACE", "event_id_for", "random_event_id"]

#: Namespace of deterministic event ids. Fixed forever: changing it changes every such id.
EVENT_ID_NAMESPACE = uuid.UUID("5b0f3c1e-8d0a-5e7c-9a43-6f2d1c0b9e57")


def event_id_for(site_id: str, idempotency_key: str) -> str:
    """The deterministic event id of a business fact: ``uuid5(NAMESPACE, "site:key")``.

    Any sender (another service, a CRM export) computing it the same way gets the same id.
    """
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{site_id}:{idempotency_key}"))


def random_event_id() -> str:
    """A fresh random id, for an event without an idempotency key."""
    return str(uuid.uuid4())
