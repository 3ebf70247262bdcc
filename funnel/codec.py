"""The one binary encoding of the pipeline's internal records (DESIGN §9a): person state in
the embedded store and the Kafka changelog, and state carried in internal messages.

MessagePack through msgspec: it encodes the core's dataclasses and structs directly (no
intermediate dicts), decodes them with their types checked, and is the fastest well-kept
codec for Python (``benchmarks/bench_core.py`` measures it as the hosts' floor). A person's
log entries are arrays (:class:`funnel.profile.Entry`), so the state of a person is a few
hundred bytes plus about 100 per logged event.

A state saved before this encoding (JSON, whole events in its log) still decodes: its events
are turned into log entries under the configuration given, and its marks are made on the
next event (:func:`funnel.processor.upgraded`).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from funnel.attribution import PathTouch
from funnel.channels import Touch
from funnel.config import CoreConfig
from funnel.events import Event
from funnel.leads import LeadSignals
from funnel.processor import PersonState, next_deadline
from funnel.profile import Profile, entry_of
from funnel.progression import FunnelProgress

__all__ = [
    "StateDecodeError",
    "deadline_of",
    "decode_state",
    "encode_state",
    "encode_with_deadline",
    "state_from_builtins",
    "state_to_builtins",
]

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(PersonState)


class StateDecodeError(ValueError):
    """Saved state that is neither this encoding nor the earlier JSON one."""


def encode_state(state: PersonState) -> bytes:
    return _ENCODER.encode(state)


_WITH_DEADLINE = b"\x00"
"""The first byte of :func:`encode_with_deadline`'s form (a MessagePack array, the form of
:func:`encode_state`, never starts with it)."""


def encode_with_deadline(state: PersonState, due: int | None) -> bytes:
    """The state after a 9-byte header: :data:`_WITH_DEADLINE`, then the person's next
    deadline (8 bytes, big-endian, signed epoch ms; -1: none), readable without decoding
    the state (:func:`deadline_of`). :func:`decode_state` reads both forms."""
    return (
        _WITH_DEADLINE
        + (-1 if due is None else due).to_bytes(8, "big", signed=True)
        + (_ENCODER.encode(state))
    )


def deadline_of(data: bytes, config: CoreConfig) -> int | None:
    """The next deadline in a state's header; for a state without one, computed from it."""
    if data[:1] == _WITH_DEADLINE:
        due = int.from_bytes(data[1:9], "big", signed=True)
        return None if due < 0 else due
    return next_deadline(decode_state(data, config), config)


def decode_state(data: bytes, config: CoreConfig | None = None) -> PersonState:
    """A state :func:`encode_state` or :func:`encode_with_deadline` wrote, or the JSON of an
    earlier version (whose events become log entries under ``config``: required then)."""
    if data[:1] == _WITH_DEADLINE:
        data = data[9:]
    if data[:1] == b"{":  # a MessagePack map never starts with "{" (a positive fixint)
        if config is None:
            raise StateDecodeError("a person state saved as JSON needs the configuration")
        return _from_json(json.loads(data), config)
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise StateDecodeError(f"unreadable person state: {exc}") from None


def state_to_builtins(state: PersonState) -> Any:
    """The state as JSON-able values (for a message that is JSON as a whole)."""
    return msgspec.to_builtins(state)


def state_from_builtins(value: Any, config: CoreConfig) -> PersonState:
    """The inverse of :func:`state_to_builtins` (or an earlier version's JSON form)."""
    if isinstance(value, dict):  # this encoding makes arrays; an earlier one, objects
        return _from_json(value, config)
    return msgspec.convert(value, PersonState, strict=False)


def _from_json(value: dict[str, Any], config: CoreConfig) -> PersonState:
    """A state of the earlier JSON form: whole events in the log, structs as JSON objects,
    no marks."""
    events = [Event.model_validate(e) for e in value.get("log", [])]
    state = {
        **value,
        "profile": _profile(value["profile"]),
        "base": _profile(value.get("base")),
        "log": [],
    }
    person = msgspec.convert(_positional(PersonState, state), PersonState, strict=False)
    person.log = [entry_of(event, config) for event in events]
    return person


def _profile(value: dict[str, Any] | None) -> list[Any] | None:
    if value is None:
        return None
    touch = value.get("last_touch")
    return _positional(
        Profile,
        {
            **value,
            "last_touch": None if touch is None else _positional(Touch, touch),
            "touches": [_positional(PathTouch, t) for t in value.get("touches", [])],
            "funnels": {
                name: _positional(FunnelProgress, progress)
                for name, progress in value.get("funnels", {}).items()
            },
            "lead": _positional(LeadSignals, value.get("lead", {})),
        },
    )


def _positional(kind: type[msgspec.Struct], value: dict[str, Any]) -> list[Any]:
    """An object's fields in the order of ``kind`` (an array-like struct), up to the first
    one missing (those after it take their defaults)."""
    out = []
    for name in kind.__struct_fields__:
        if name not in value:
            break
        out.append(value[name])
    return out
