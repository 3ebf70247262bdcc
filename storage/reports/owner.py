"""Who owns an embedded store, and asking them for a report.

chDB lets one process open a store directory at a time (DESIGN §11). The process that owns
one and serves HTTP (``funnel serve``) writes ``owner.json`` into the directory once it
listens — its API base URL, pid and database — and removes it on exit. ``funnel report``
reads the file first: if its owner answers, the report comes from the owner's
``/api/reports/<name>``; a stale file (the pid is gone, or nothing answering at the URL is that
pid) is ignored and the store is opened directly.

Contract of :func:`fetch_report`: ``None`` means "no owner answered, open the store yourself";
a request the owner refuses raises :class:`~storage.reports.catalog.ReportRequestError`;
an owner that answers but fails raises :class:`OwnerError` (no silent fallback then: the
directory is still locked by that owner).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from storage.reports.catalog import ReportRequest, ReportRequestError

__all__ = [
    "OWNER_FILE",
    "Owner",
    "OwnerError",
    "fetch_report",
    "read_owner",
    "remove_owner",
    "store_directory",
    "write_owner",
]

OWNER_FILE = "owner.json"
#: The owner's read key, beside ``owner.json`` (mode 0600): what ``funnel report`` sends.
READ_KEY_FILE = "read-key"
#: The header every owner API answer carries: the pid, to tell a stale file's port apart.
PID_HEADER = "X-Funnel-Owner-Pid"
_PROBE_TIMEOUT_S = 3.0
# The owner is on this machine: never send its loopback URL through an HTTP(S)_PROXY.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class OwnerError(Exception):
    """The owner of the store answered but could not give the report."""


@dataclass(frozen=True, slots=True)
class Owner:
    """What ``owner.json`` says: where the owner's API is, its pid and the database it serves."""

    url: str
    pid: int
    database: str


def store_directory(url: str) -> Path | None:
    """The directory of an embedded store URL (``chdb:///path`` or a bare path), else ``None``."""
    if url.startswith("chdb://"):
        return Path(url[len("chdb://") :] or ".funnel").resolve()
    if "://" in url:
        return None
    return Path(url).resolve()


def write_owner(directory: Path, owner: Owner) -> Path:
    """Write ``owner.json`` atomically (readers never see half a file)."""
    path = directory / OWNER_FILE
    partial = directory / f".{OWNER_FILE}.{owner.pid}"
    partial.write_text(
        json.dumps({"url": owner.url, "pid": owner.pid, "database": owner.database}), "utf-8"
    )
    os.replace(partial, path)
    return path


def remove_owner(directory: Path, pid: int | None = None) -> None:
    """Remove ``owner.json`` if it names ``pid`` (default: this process); idempotent."""
    pid = os.getpid() if pid is None else pid
    found = _read(directory / OWNER_FILE)
    if found is not None and found.pid == pid:
        (directory / OWNER_FILE).unlink(missing_ok=True)


def read_owner(directory: Path) -> Owner | None:
    """The owner a live process claims to be, or ``None`` (no file, unreadable, dead pid)."""
    owner = _read(directory / OWNER_FILE)
    if owner is None or not _alive(owner.pid):
        return None
    return owner


def _read(path: Path) -> Owner | None:
    try:
        body = json.loads(path.read_text("utf-8"))
        return Owner(url=str(body["url"]), pid=int(body["pid"]), database=str(body["database"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def fetch_report(directory: Path, database: str, request: ReportRequest) -> object | None:
    """The JSON payload of ``request`` from the store's owner, or ``None`` when none answers.

    Blocks for the report's run time on the owner (no read timeout beyond a generous one:
    a large report may take a while; the owner answered a probe first).
    """
    owner = read_owner(directory)
    if owner is None or not _answers(owner, directory):
        return None
    if owner.database != database:
        raise OwnerError(
            f"the store is open in funnel serve (pid {owner.pid}, {owner.url}) for database "
            f"{owner.database!r}, not {database!r}: ask for --database {owner.database} "
            "or stop it"
        )
    query = urllib.parse.urlencode(dict(request.params))
    url = f"{owner.url}/api/reports/{urllib.parse.quote(request.name)}?{query}"
    try:
        with _OPENER.open(_authorised(url, directory), timeout=600) as response:
            payload: object = json.loads(response.read())
            return payload
    except urllib.error.HTTPError as exc:
        body = _error_body(exc)
        if exc.code == 400:
            raise ReportRequestError(str(body.get("message", body))) from None
        raise OwnerError(f"{owner.url} answered {exc.code}: {body.get('message', body)}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise OwnerError(f"the report from {owner.url} failed: {exc}") from exc


def _authorised(url: str, directory: Path) -> urllib.request.Request:
    """A request for ``url`` with the owner's read key (if this user can read it)."""
    headers = {}
    try:
        key = (directory / READ_KEY_FILE).read_text("utf-8").strip()
    except OSError:
        key = ""
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return urllib.request.Request(url, headers=headers)


def _answers(owner: Owner, directory: Path) -> bool:
    """Whether the process at the owner's URL is the owner (a port may have been reused)."""
    request = _authorised(f"{owner.url}/api/owner", directory)
    try:
        with _OPENER.open(request, timeout=_PROBE_TIMEOUT_S) as r:
            return bool(r.headers.get(PID_HEADER) == str(owner.pid))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _error_body(exc: urllib.error.HTTPError) -> dict[str, object]:
    try:
        body = json.loads(exc.read())
    except (OSError, ValueError):
        return {"message": exc.reason}
    return body if isinstance(body, dict) else {"message": body}
