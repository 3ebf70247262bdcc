"""Key files (``funnel keys``): the write and read keys a collector accepts, as digests only.

A write key file is ``{"sha256:<hex>": "site"}`` (``FUNNEL_WRITE_KEYS_FILE``), a read key file
``{"sha256:<hex>": ["site", …] or "*"}`` (``FUNNEL_READ_KEYS_FILE``): the formats the collector
reads (:mod:`producers.collector.settings`). A new key is shown once, to whoever made it; the
file keeps its digest, so neither the file nor a backup of it gives a key away. The file is
written whole and atomically, readable by its owner only. A running collector reads the file
when it starts: restart it after a change.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from producers.collector.settings import DIGEST, key_digest

__all__ = ["KeyEntry", "KeyFile", "NoSuchKey"]


class NoSuchKey(LookupError):
    """No key (or more than one) matches what was given."""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    digest: str
    sites: tuple[str, ...]

    @property
    def short(self) -> str:
        """How a key is named in listings: the start of its digest."""
        return self.digest[: len(DIGEST) + 12]


class KeyFile:
    """One key file: ``read`` keys map to several sites (or ``*``), write keys to one."""

    def __init__(self, path: Path, *, read: bool) -> None:
        self.path, self.read = path, read

    def entries(self) -> list[KeyEntry]:
        try:
            raw = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return []
        if not isinstance(raw, dict):
            raise ValueError(f"{self.path}: a key file holds one JSON object")
        entries = []
        for key, value in raw.items():
            sites = (value,) if isinstance(value, str) else tuple(value)
            digest = key if key.startswith(DIGEST) else key_digest(key)
            entries.append(KeyEntry(digest, sites))
        return sorted(entries, key=lambda e: (e.sites, e.digest))

    def add(self, sites: tuple[str, ...]) -> tuple[str, KeyEntry]:
        """A new key for ``sites``: the key (to show once) and what the file keeps of it."""
        if not sites or (not self.read and (len(sites) != 1 or sites == ("*",))):
            raise ValueError("a write key writes to exactly one site")
        key = ("rk_" if self.read else "wk_") + secrets.token_urlsafe(24)
        entry = KeyEntry(key_digest(key), sites)
        self._save([*self.entries(), entry])
        return key, entry

    def revoke(self, name: str) -> KeyEntry:
        """Remove the key named by ``name``: the key itself, or the start of its digest."""
        entries = self.entries()
        if name.startswith(DIGEST):
            found = [e for e in entries if e.digest.startswith(name)]
        else:
            found = [e for e in entries if e.digest == key_digest(name)]
        if len(found) != 1:
            raise NoSuchKey(
                f"{len(found)} keys match {name[: len(DIGEST) + 12]!r}"
                + ("" if found else f" in {self.path}")
            )
        self._save([e for e in entries if e is not found[0]])
        return found[0]

    def _save(self, entries: list[KeyEntry]) -> None:
        data = {
            e.digest: (list(e.sites) if self.read and e.sites != ("*",) else e.sites[0])
            for e in entries
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(partial, self.path)
