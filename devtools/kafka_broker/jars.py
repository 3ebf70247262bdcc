"""Fetching Apache Kafka's runtime jars once with Maven into a cache directory."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from devtools.kafka_broker.errors import JarFetchError

__all__ = [
    "KAFKA_VERSION",
    "MARKER_NAME",
    "MAVEN_TIMEOUT_S",
    "POM_PATH",
    "default_cache_dir",
    "ensure_jars",
]

KAFKA_VERSION: Final = "4.4.0"
"""The Apache Kafka release the dev broker runs (the newest that resolves on Maven Central here)."""

POM_PATH: Final = Path(__file__).with_name("kafka_broker.pom.xml")
"""The pom whose runtime dependencies are the broker's classpath."""

MARKER_NAME: Final = ".funnel-jars-complete"
"""Written into a jar directory after a successful fetch; its absence means "fetch again"."""

MAVEN_TIMEOUT_S: Final = 900.0


def default_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """``$FUNNEL_CACHE_DIR/kafka-<version>``, else ``~/.cache/funnel/kafka-<version>``."""
    root = os.environ.get("FUNNEL_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "funnel"
    return base / f"kafka-{version}"


def _jars_complete(directory: Path) -> bool:
    marker = directory / MARKER_NAME
    if not marker.is_file():
        return False
    names = [n for n in marker.read_text(encoding="utf-8").splitlines() if n.strip()]
    return bool(names) and all((directory / n).is_file() for n in names)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def ensure_jars(cache_dir: Path | None = None, *, version: str = KAFKA_VERSION) -> Path:
    """Return a directory holding every runtime jar of Apache Kafka ``version``.

    ``cache_dir`` is the jar directory itself (default :func:`default_cache_dir`). If it holds a
    complete fetch (marker present and every listed jar on disk) it is returned as is; otherwise
    the jars are fetched with ``mvn dependency:copy-dependencies`` (using :data:`POM_PATH`) into
    a temporary sibling directory which is renamed into place once complete, so readers never
    see a partial directory. Concurrent callers are serialised by a lock file.

    Raises :class:`JarFetchError` if ``mvn`` is not on ``PATH`` or Maven fails (the message
    carries the tail of Maven's output).
    """
    target = (cache_dir or default_cache_dir(version)).expanduser().resolve()
    if _jars_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _jars_complete(target):  # another process finished while we waited
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise JarFetchError(
                "Maven ('mvn') is not on PATH; it is needed once to fetch the Kafka broker jars "
                f"into {target} (Debian: apt-get install maven)."
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            cmd = [
                mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(POM_PATH),
                f"-Dkafka.version={version}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ]  # fmt: skip
            try:
                done = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=MAVEN_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                out = exc.output if isinstance(exc.output, str) else ""
                raise JarFetchError(
                    f"Maven did not fetch the Kafka {version} jars within {MAVEN_TIMEOUT_S:.0f}s."
                    f"\n{_tail(out)}"
                ) from exc
            jars = sorted(p.name for p in staging.glob("*.jar"))
            if done.returncode != 0 or not any(n.startswith("kafka_") for n in jars):
                raise JarFetchError(
                    f"Maven failed to fetch the Kafka {version} jars (exit {done.returncode}): "
                    f"{' '.join(cmd)}\n{_tail(done.stdout)}"
                )
            (staging / MARKER_NAME).write_text("\n".join(jars) + "\n", encoding="utf-8")
            if target.exists():  # an interrupted or corrupted earlier fetch
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
