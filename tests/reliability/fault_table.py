"""The fault table (issue 19): the whole Kafka pipeline under faults, against ground truth.

    python -m tests.reliability.fault_table [--persons 600] [--faults worker,sink,...]

For each fault, on one real broker: ``funnel serve --kafka`` (the collector), two ``funnel
worker`` processes and ``funnel sink`` into a fresh chDB store, fed simulated traffic with
real-world mess (5% client retries, reordering, 2% late events, 1% malformed payloads, skewed
clocks) over HTTP by a client that retries 429/503/network errors, as the tracker and the
SDK do. While it sends, the fault strikes several times at random points:

* ``worker`` — kill -9 of one worker (then started again);
* ``sink`` — kill -9 of the sink (then started again);
* ``collector`` — kill -9 of the collector (then started again on the same port; the client
  retries what got no answer);
* ``broker`` — the broker stopped and started again mid-stream;
* ``store`` — the store unavailable for 30 s (:mod:`tests.reliability.store_outage`): the
  sink pauses, then catches up, its memory bounded;
* ``poison`` — events the runtime raises on (:mod:`tests.poison`), a few per site among the
  traffic: each must reach the dead-letter topic with its reason, and the rest go on;
* ``none`` — no fault (the baseline).

The traffic comes from two sites, each with its own write key.

Then it waits until the workers and the sink have taken every record, stops the sink, and
compares the store with the simulator's ground truth: events lost (accepted by the collector,
absent from the store) and duplicated (stored more than once), and stage rows that do not net
to the truth. It also gives the time from the last fault to a drained pipeline and the peak
memory (VmHWM) of the workers and the sink. The table goes to ``tests/reliability/
RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from kafka.errors import KafkaError

from devtools.kafka_broker import KafkaBroker
from funnel.funnels import FunnelCatalog
from funnel.intake import POISON
from funnel.topics import TopicNames
from producers.messiness import Arrival, Mess, arrivals
from producers.replay import send_http
from producers.simulator import Simulation, simulate
from storage.backends import ChdbStore
from stream_processors.topics import create_topics
from tests import poison
from tests.integration.stream_processors.test_kafka_pipeline import (
    LAGGING,
    caught_up,
    dead_letters,
    stable_members,
)
from tests.servers import free_port

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
FAULTS = ("none", "worker", "sink", "collector", "broker", "store", "poison")
SITES = {"faults-a": "fault-table-key-a", "faults-b": "fault-table-key-b"}
"""The sites of the traffic and their write keys."""
PARTITIONS = 4
OUTAGE_S = 30.0
"""How long the store is unavailable in the ``store`` row."""
START = datetime(2025, 10, 1, tzinfo=UTC)
"""When the simulated traffic begins: a year before the simulator's default, so that no
journey reaches past today. The collector clamps an event from beyond now + its bound
(DESIGN §2), which the truth does not model: a repeat purchase the simulation dated in
February 2027 was clamped to the run's day on 2026-12-07 and fell inside the conversion
window it had missed, one stage row more than the truth."""
POISON_PER_SITE = 4


@dataclass
class Row:
    fault: str
    strikes: int
    events: int
    lost: int
    duplicated: int
    stage_errors: int
    recover_s: float
    peak_mb: dict[str, float]


class Pipeline:
    """The processes of one run, each restartable."""

    def __init__(self, bootstrap: str, work: Path, prefix: str, fault: str) -> None:
        self.bootstrap, self.work, self.prefix, self.fault = bootstrap, work, prefix, fault
        self.switch = work / "store-down"
        """While this file exists, the sink's store is down (the ``store`` fault)."""
        self.port = free_port()
        self.app_id = f"fault-{prefix.rstrip('.')}"
        self.group = f"sink-{prefix.rstrip('.')}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.peaks: dict[str, float] = {}
        self.web_ports: dict[str, int] = {}  # worker → the port of its /metrics page

    def command(self, role: str) -> list[str]:
        funnel = [sys.executable, "-m", "funnel.cli"]
        kafka = ["--kafka", self.bootstrap, "--topic-prefix", self.prefix]
        if role == "collector":
            return [*funnel, "serve", *kafka, "--port", str(self.port), "--partitions", "4"]
        if role.startswith("worker"):
            if self.fault == "poison":  # the runtime raises on poison events
                funnel = [sys.executable, "-m", "tests.poison"]
            data = ["--data-dir", str(self.work / role), "--session-timeout", "6"]
            self.web_ports[role] = free_port()
            data += ["--web-port", str(self.web_ports[role])]
            return [*funnel, "worker", *kafka, "--app-id", self.app_id, *data]
        if self.fault == "store":  # the store goes down while the switch exists
            funnel = [sys.executable, "-m", "tests.reliability.store_outage", str(self.switch)]
        store = f"chdb://{self.work / 'store'}"
        return [*funnel, "sink", *kafka, "--group", self.group, "--store", store]

    def start(self, role: str) -> None:
        keys = ",".join(f"{key}:{site}" for site, key in SITES.items())
        env = {**os.environ, "FUNNEL_WRITE_KEYS": keys, "FUNNEL_RATE_LIMIT": "off"}
        with (self.work / f"{role}.log").open("ab") as log:  # the child keeps its own copy
            self.procs[role] = subprocess.Popen(
                self.command(role), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        if role == "collector":
            deadline = time.monotonic() + 60
            while not _listening(self.port):
                assert time.monotonic() < deadline, "the collector did not start"
                time.sleep(0.1)  # waiting for a process to listen

    def kill(self, role: str) -> None:
        proc = self.procs[role]
        self._note_peak(role)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def _note_peak(self, role: str) -> None:
        kind = role.rstrip("0123456789")
        self.peaks[kind] = max(self.peaks.get(kind, 0.0), _peak_mb(self.procs[role].pid))

    def stop_all(self) -> None:
        for role, proc in self.procs.items():
            if proc.poll() is None:
                self._note_peak(role)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()

    def ready(self) -> bool:
        """Both workers and the sink are members of their groups, and the groups stable."""
        self._alive()
        try:
            workers = stable_members(self.bootstrap, self.app_id)
            return workers == 2 and stable_members(self.bootstrap, self.group) == 1
        except KafkaError:  # the group's coordinator is not there yet
            return False

    def _alive(self) -> None:
        for role, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{role} exited {proc.returncode}: see {self.work}")

    def dump_stacks(self) -> None:
        """Each live process's Python stacks into ``<role>.stacks`` (py-spy, when installed)
        and each worker's metrics (its consumer lag: read versus committed) into
        ``<role>.metrics``, to see where a process that stopped making progress waits."""
        import urllib.request

        for role, port in self.web_ports.items():
            url = f"http://127.0.0.1:{port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=10) as page:
                    (self.work / f"{role}.metrics").write_bytes(page.read())
            except OSError as exc:
                (self.work / f"{role}.metrics").write_text(f"{url}: {exc}\n")
        spy = Path(sys.executable).parent / "py-spy"
        for role, proc in self.procs.items():
            if spy.exists() and proc.poll() is None:
                with (self.work / f"{role}.stacks").open("wb") as out:
                    cmd = [str(spy), "dump", "--pid", str(proc.pid)]
                    subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)

    def drained(self, names: TopicNames) -> bool:
        self._alive()
        # Both groups every time, so that LAGGING says where each one is when this times out.
        workers = caught_up(self.bootstrap, self.app_id, [names.events, names.person_events])
        return caught_up(self.bootstrap, self.group, names.landed) and workers


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _peak_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_fault(
    fault: str,
    bootstrap: str,
    work: Path,
    *,
    persons: int,
    seed: int,
    seconds: float,
    restart_broker: Callable[[random.Random], None] | None = None,
) -> Row:
    """One row of the table: ``fault`` striking while the traffic of ``persons`` (over the
    sites) flows for ``seconds`` (``broker`` needs ``restart_broker``), then the store and
    the dead-letter topic against the truth."""
    rng = random.Random(seed)
    names = TopicNames(f"ft{uuid.uuid4().hex[:6]}.")
    create_topics(bootstrap, names, PARTITIONS)
    mess = Mess(duplicates=0.05, reorder_seconds=120, late=0.02, malformed=0.01, skewed_devices=0.1)
    sims: list[Simulation] = []
    traffic: dict[str, list[Arrival]] = {}
    poisoned: set[str] = set()
    for n, site in enumerate(SITES):
        sim = simulate(
            persons // len(SITES), seed=seed * 101 + n, site_id=site, start=START, multi_device=0.5
        )
        sims.append(sim)
        traffic[site] = arrivals(sim.events, mess, seed=seed + n)
        if fault == "poison":
            traffic[site] = _with_poison(traffic[site], rng, poisoned)
    pipeline = Pipeline(bootstrap, work, names.prefix, fault)
    for role in ("collector", "worker1", "worker2", "sink"):
        pipeline.start(role)
    # Faults strike a running pipeline: a worker that cannot reach the broker while it
    # starts exits (a supervisor starts it again), which is not what a row measures.
    deadline = time.monotonic() + 180
    while not pipeline.ready():
        assert time.monotonic() < deadline, f"{fault}: the pipeline did not start ({work})"
        time.sleep(0.5)  # polling the groups
    done = threading.Event()
    failure: list[BaseException] = []

    def send() -> None:
        """The traffic over ``seconds``, as clients would send it (in steps, retrying)."""
        steps, url = 40, f"http://127.0.0.1:{pipeline.port}"
        try:
            for step in range(steps):
                for site, key in SITES.items():
                    mine = traffic[site]
                    chunk = -(-len(mine) // steps)
                    part = mine[step * chunk : (step + 1) * chunk]
                    send_http(part, url, key, size=20, retries=12)
                time.sleep(seconds / steps)  # the clients' own pace
        except BaseException as exc:  # reported below
            failure.append(exc)
        finally:
            done.set()

    sender = threading.Thread(target=send)
    sender.start()
    strikes, last = 0, 0.0
    try:  # whatever happens, no process of this run outlives it
        if fault == "store":  # one outage, while the traffic flows
            done.wait(rng.uniform(3.0, 8.0))
            strikes = 1
            pipeline.switch.touch()
            time.sleep(OUTAGE_S)  # the outage itself
            pipeline.switch.unlink()
            last = time.monotonic()
        while fault in KILLS and not done.wait(rng.uniform(3.0, 8.0)):
            strikes += 1
            if fault == "broker":
                assert restart_broker is not None, "the broker fault needs a broker of its own"
                restart_broker(rng)
            else:
                role = rng.choice(("worker1", "worker2")) if fault == "worker" else fault
                pipeline.kill(role)
                pipeline.start(role)
            last = time.monotonic()
        sender.join()
        last = last or time.monotonic()  # no fault: from the end of the traffic
        if failure:
            raise RuntimeError(f"the client gave up under {fault}") from failure[0]
        deadline = time.monotonic() + 600
        while not pipeline.drained(names):
            if time.monotonic() > deadline:
                pipeline.dump_stacks()
                raise AssertionError(f"{fault}: not drained in 600 s ({work}): {LAGGING}")
            time.sleep(1)  # polling the group's offsets
        recover = time.monotonic() - last
    finally:
        pipeline.stop_all()
    strikes = strikes or len(poisoned)
    # A poison event was accepted: the dead-letter topic must have it, with its reason.
    unlettered = len(poisoned - _poison_letters(bootstrap, names))
    store = ChdbStore(work / "store")
    try:
        row = _compare(fault, strikes, store, sims, round(recover, 1), pipeline.peaks)
    finally:
        store.close()
    row.lost += unlettered
    return row


KILLS = ("worker", "sink", "collector", "broker")
"""The faults that strike again and again while the traffic flows."""


def _with_poison(traffic: list[Arrival], rng: random.Random, ids: set[str]) -> list[Arrival]:
    """``traffic`` with a poison copy (:func:`tests.poison.poison_copy`) of a few
    conversions, each sent right after the event it copies; their ids are added to ``ids``."""
    kinds = ("lead", "order", "payment")
    conversions = [a for a in traffic if a.kind == "event" and a.payload.get("type") in kinds]
    chosen = {id(a) for a in rng.sample(conversions, POISON_PER_SITE)}
    out = []
    for arrival in traffic:
        out.append(arrival)
        if id(arrival) in chosen:
            copy = poison.poison_copy(arrival.payload)
            ids.add(copy["event_id"])
            out.append(dataclasses.replace(arrival, payload=copy))
    return out


def _poison_letters(bootstrap: str, names: TopicNames) -> set[str]:
    """The event ids in the dead-letter topic with the runtime's reason."""
    return {
        json.loads(letter["payload"]).get("event_id")
        for letter in dead_letters(bootstrap, names)
        if json.loads(letter["reason"])[0]["code"] == POISON
    }


def _compare(
    fault: str,
    strikes: int,
    store: ChdbStore,
    sims: list[Simulation],
    recover: float,
    peaks: dict[str, float],
) -> Row:
    truth = {e.event_id for sim in sims for e in sim.events}
    rows = store.query(
        f"SELECT event_id, count() AS n FROM {store.database}.events GROUP BY event_id"
    )
    stored = {r["event_id"]: int(r["n"]) for r in rows}
    lost = len(truth - set(stored))
    duplicated = sum(n - 1 for n in stored.values()) + len(set(stored) - truth)
    stage_errors = 0
    for spec in FunnelCatalog.default().specs:
        [net] = store.query(
            f"SELECT sum(net) AS n FROM (SELECT site_id, person_id, step_index, sum(sign) AS net "
            f"FROM {store.database}.stage_reached WHERE funnel = {{f:String}} "
            "GROUP BY site_id, person_id, step_index)",
            {"f": spec.name},
        )
        expected = sum(sum(sim.truth.step_counts(spec.name)) for sim in sims)
        stage_errors += abs(int(net["n"] or 0) - expected)
    return Row(fault, strikes, len(truth), lost, duplicated, stage_errors, recover, peaks)


def write_results(rows: list[Row], args: argparse.Namespace) -> None:
    lines = [
        "# The fault table",
        "",
        f"Written by `python -m tests.reliability.fault_table --persons {args.persons} "
        f"--seconds {args.seconds:g} --faults {','.join(r.fault for r in rows)}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} "
        "UTC (one broker, a collector, two workers and the sink on this machine's 2 cores; "
        f"the traffic of two sites, {args.persons} persons in all).",
        "",
        "Strikes: kills or restarts; for `store`, one outage of 30 s (every call of the sink "
        "to the store fails as an unreachable server's would); for `poison`, the poison "
        "events sent (accepted by the collector, then the runtime raises on them). Events: "
        "the simulator's distinct events (the ground truth; poison events not counted). "
        "Lost: accepted events absent from the store, and poison events absent from the "
        "dead-letter topic. Duplicated: rows beyond one per event id, and rows of events "
        "not in the truth (a poison event landed). Stage errors: how far the stage rows' net "
        "counts are from the truth, over every funnel. Time to recover: from the last fault "
        "(none, poison: the end of the traffic) to a drained pipeline. Peak memory: VmHWM "
        "of each process kind (the largest instance).",
        "",
        "| fault | strikes | events | lost | duplicated | stage errors | time to recover (s) "
        "| peak memory (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.peak_mb.items()))
        lines.append(
            f"| {r.fault} | {r.strikes} | {r.events} | {r.lost} | {r.duplicated} | "
            f"{r.stage_errors} | {r.recover_s} | {peaks} |"
        )
    lines.append("")
    RESULTS.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=600)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the traffic lasts")
    parser.add_argument(
        "--json", action="store_true", help="print each row as JSON; RESULTS.md stays as it is"
    )
    args = parser.parse_args()
    rows = []
    tmp = tempfile.mkdtemp(prefix="fault-table-")  # kept: the processes' logs, to read
    print(f"work directory: {tmp}", flush=True)
    broker = KafkaBroker(port=free_port(), data_dir=Path(tmp) / "kafka")
    broker.start()

    def restart(rng: random.Random) -> None:
        broker.stop()
        time.sleep(rng.uniform(1.0, 3.0))  # the outage itself
        broker.start()  # same port and data

    try:
        for n, fault in enumerate(args.faults.split(",")):
            work = Path(tmp) / fault
            work.mkdir()
            row = run_fault(
                fault,
                broker.bootstrap_servers,
                work,
                persons=args.persons,
                seed=args.seed + n,
                seconds=args.seconds,
                restart_broker=restart,
            )
            print(json.dumps(asdict(row)) if args.json else row, flush=True)
            rows.append(row)
    finally:
        broker.stop()
    if not args.json:
        write_results(rows, args)
        print(RESULTS.read_text())


if __name__ == "__main__":
    main()
