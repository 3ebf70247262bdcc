"""The ``funnel`` root command and what every command shares: options, configuration, the
stores, the refusal of expected mistakes. The commands live in the modules beside it.

The ``funnel`` command is the one composition root that wires the core to its adapters.

Adapters (Kafka, Faust, ClickHouse, chDB) are imported lazily inside each command, so
``funnel --help`` stays fast and the core stays free of them.

Expected mistakes end in one line on stderr and exit code 2, never a traceback: a store that
cannot be opened or reached, a store URL of another scheme, a configuration file that is not
valid, a broker that does not answer, a file that is not there (:func:`_expected`, applied
once for every command by the root group). Anything else is a bug and shows its traceback;
``--log-level debug`` shows the traceback of a refused one too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from funnel.logs import FORMATS
from funnel.logs import configure as configure_logging
from funnel.processor import CoreConfig
from funnel.runtime import tune_gc
from funnel.settings import (
    DEFAULT_DATABASE,
    DEFAULT_KAFKA,
    DEFAULT_STORE,
    DEFAULT_TOPIC_PREFIX,
)

if TYPE_CHECKING:
    from funnel.leads import LeadRules
    from storage.backends import Store
    from stream_processors.state import SavedState

T = TypeVar("T")
log = logging.getLogger(__name__)

err = Console(stderr=True)
out = Console()

store_option = click.option(
    "--store",
    envvar="FUNNEL_STORE",
    default=DEFAULT_STORE,
    show_default=True,
    help="chdb:///path (embedded) or clickhouse://user:pass@host:9000/db (server).",
)
database_option = click.option(
    "--database", envvar="FUNNEL_DATABASE", default=DEFAULT_DATABASE, show_default=True
)
kafka_option = click.option(
    "--kafka",
    envvar="FUNNEL_KAFKA",
    default=DEFAULT_KAFKA,
    show_default=True,
    help="Kafka bootstrap servers.",
)
funnels_option = click.option(
    "--funnels",
    "funnels_file",
    envvar="FUNNEL_FUNNELS",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Funnel definitions (TOML).",
)
channels_option = click.option(
    "--channels",
    "channels_file",
    envvar="FUNNEL_CHANNELS",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Channel rules (TOML).",
)
prefix_option = click.option(
    "--topic-prefix",
    envvar="FUNNEL_TOPIC_PREFIX",
    default=DEFAULT_TOPIC_PREFIX,
    show_default=True,
    help="Prefix of every topic name.",
)
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)


class Refused(click.ClickException):
    """An expected mistake: one line on stderr (``Error: …``), exit code 2."""

    exit_code = 2


def _expected(exc: Exception) -> str | None:
    """The one-line message of an exception that is an expected mistake, else ``None``.

    Imports happen here, on the error path only: an exception of an adapter's type means
    its module is loaded already.
    """
    from storage.backends import StoreUnavailable

    if isinstance(exc, StoreUnavailable):
        return _one_line(f"store unavailable: {exc}")
    if isinstance(exc, FileNotFoundError) and exc.strerror:
        named = exc.filename is not None and str(exc.filename) not in exc.strerror
        return _one_line(exc.strerror + (f": {exc.filename}" if named else ""))
    if "kafka.errors" in sys.modules:  # never load the Kafka client to look at an error
        from kafka.errors import KafkaConnectionError, KafkaTimeoutError

        if isinstance(exc, KafkaTimeoutError | KafkaConnectionError):
            return _one_line(f"Kafka unavailable: {exc}")
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Root(click.Group):
    """The ``funnel`` group: turns expected mistakes into :class:`Refused` (module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit):
            raise
        except Exception as exc:
            message = _expected(exc)
            if message is None:
                raise
            log.debug("refused", exc_info=True)
            raise Refused(message) from exc


def _from_file(load: Callable[[Path], T], path: Path, option: str) -> T:
    """A configuration file loaded, or a usage error naming the option, the file and the
    problem in one line (TOML syntax, or what the model refuses)."""
    import tomllib

    from pydantic import ValidationError

    try:
        return load(path)
    except tomllib.TOMLDecodeError as exc:
        problem = f"not valid TOML: {exc}"
    except ValidationError as exc:
        problem = "invalid: " + "; ".join(
            ".".join(str(part) for part in error["loc"]) + f": {error['msg']}"
            if error["loc"]
            else error["msg"]
            for error in exc.errors()
        )
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problem = str(exc)
    raise click.BadParameter(_one_line(f"{path}: {problem}"), param_hint=option)


def _config(funnels_file: Path | None, channels_file: Path | None) -> CoreConfig:
    """The core's configuration; a funnels or channels file it cannot use is a usage error."""
    from funnel.channels import ChannelRules
    from funnel.funnels import FunnelCatalog

    # Checked one by one first, to name the file at fault (they are small: read twice).
    if funnels_file is not None:
        _from_file(FunnelCatalog.from_file, funnels_file, "--funnels")
    if channels_file is not None:
        _from_file(ChannelRules.from_file, channels_file, "--channels")
    return CoreConfig.from_files(funnels_file, channels_file, leads=_lead_rules())


def _lead_rules() -> LeadRules:
    """The lead rules of ``FUNNEL_LEADS`` (``--leads``), else the defaults; a usage error
    for a file that is not valid rules (the message names the file)."""
    from funnel.leads import LeadRulesError, load_lead_rules

    try:
        return load_lead_rules()
    except LeadRulesError as exc:
        raise click.BadParameter(str(exc), param_hint="--leads") from None


def _store(url: str, database: str, *, create: bool = True) -> Store:
    """``open_store``, a URL of an unknown scheme being a usage error of ``--store``."""
    from storage.backends import open_store

    try:
        return open_store(url, database, create=create)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from exc


def _open_store(url: str, database: str, *, create: bool = True) -> Store:
    """The store, migrated; with ``create=False`` an embedded store must exist already."""
    from storage.migrate import migrate

    store = _store(url, database, create=create)
    migrate(store)
    return store


def _saved_state(url: str, database: str, config: CoreConfig) -> SavedState:
    """The embedded runner's durable state (:mod:`stream_processors.state`): in the store
    directory of an embedded store; for a server store, in ``FUNNEL_STATE_DIR`` (default
    ``./.funnel``)."""
    from storage.reports.owner import store_directory
    from stream_processors.state import STATE_FILE, SavedState

    directory = store_directory(url) or Path(os.environ.get("FUNNEL_STATE_DIR") or ".funnel")
    return SavedState(directory / STATE_FILE.format(database=database), config=config)


def _open_existing(url: str, database: str) -> Store:
    """A store to read: never created here (``FileNotFoundError`` when it is not there)."""
    return _open_store(url, database, create=False)


def _require_kafka(bootstrap: str, timeout_s: float = 3.0) -> None:
    """Fail fast (a few seconds, not the client's 30) when no broker answers at ``bootstrap``."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    client_log = logging.getLogger("kafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # its bootstrap errors say what the refusal says
    try:
        KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="funnel-probe",
            bootstrap_timeout_ms=int(timeout_s * 1000),
            request_timeout_ms=int(timeout_s * 1000),
        ).close()
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        raise Refused(
            f"no Kafka broker answered at {bootstrap} within {timeout_s:g} s ({exc}); "
            "start one (funnel dev kafka) or point --kafka / FUNNEL_KAFKA at one"
        ) from exc
    finally:
        client_log.setLevel(level)


class _WithoutTraceback(logging.Filter):
    """Drops the traceback of a record, keeping its line: clickhouse-driver logs a failed
    connection with one, and the :class:`StoreUnavailable` raised for it says the same."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


@click.group(cls=_Root)
@click.version_option(package_name="funnel")
@click.option(
    "--log-level",
    envvar="FUNNEL_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
)
@click.option(
    "--log-format",
    envvar="FUNNEL_LOG_FORMAT",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="json: one JSON object per line on stderr, for log shippers.",
)
@click.option(
    "--leads",
    "leads_file",
    envvar="FUNNEL_LEADS",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Lead temperature rules (TOML, the format of funnel/defaults/leads.toml).",
)
def main(log_level: str, log_format: str, leads_file: Path | None) -> None:
    """funnel: where your sales funnel leaks and which channels pay, seconds after it happens."""
    if leads_file is not None:
        # Every command and the processes it starts (workers) read the rules from there.
        os.environ["FUNNEL_LEADS"] = str(leads_file)
        _lead_rules()  # a file it cannot use fails now, in one line
    configure_logging(log_level, log_format)
    tune_gc()  # every command that runs the pipeline hosts the runtime
    driver = logging.getLogger("clickhouse_driver.connection")
    if log_level.lower() != "debug" and not any(
        isinstance(f, _WithoutTraceback) for f in driver.filters
    ):
        driver.addFilter(_WithoutTraceback())
