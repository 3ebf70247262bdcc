"""Identity stitching (DESIGN §4, issue 4): which person an event belongs to.

A device is known by its ``anonymous_id``, a customer by ``customer_id``. An event carrying
both *links* the device to the customer: from then on the device's events belong to the
customer's person, and the device's anonymous history is merged into it. A customer may have
several devices. (A device later linked to another customer follows the newest link; the
history already merged stays with the first.)

:func:`resolve` is pure: the adapter looks up the device's current link (its alias) and gets
back the person key to route the event to, the person id, and — when this event creates a
new link — the key of the anonymous person to merge.
"""

from __future__ import annotations

from dataclasses import dataclass

from funnel.events import Event

__all__ = ["Resolution", "customer_key", "device_key", "resolve"]


def device_key(site_id: str, anonymous_id: str) -> str:
    return f"{site_id}:a:{anonymous_id}"


def customer_key(site_id: str, customer_id: str) -> str:
    return f"{site_id}:c:{customer_id}"


def person_id_of(key: str) -> str:
    """The person id inside a person key (the customer id, or the anonymous id)."""
    return key.split(":", 2)[2]


@dataclass(frozen=True, slots=True)
class Resolution:
    key: str
    """The person key the event's state lives under."""
    person_id: str
    link_from: str | None = None
    """The anonymous person key to merge into ``key`` (set once per new link)."""
    device: str | None = None
    """The device key of the event (where its alias is kept)."""


def resolve(event: Event, alias: str | None) -> Resolution:
    """Route ``event``; ``alias`` is the customer key its device is linked to, if any."""
    device = device_key(event.site_id, event.anonymous_id) if event.anonymous_id else None
    if event.customer_id:
        key = customer_key(event.site_id, event.customer_id)
        link = device if device is not None and alias != key else None
        return Resolution(key, event.customer_id, link, device)
    assert device is not None  # the event model requires one of the two ids
    key = alias or device
    return Resolution(key, person_id_of(key), None, device)
