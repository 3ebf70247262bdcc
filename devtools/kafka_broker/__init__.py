"""A real single-node Apache Kafka broker for development and tests.

The broker is Apache Kafka itself (``kafka.Kafka`` from the ``org.apache.kafka:kafka_2.13`` jars
on Maven Central), run in KRaft combined mode (one JVM is both broker and controller) with Java.
Nothing is mocked: clients talk to it over TCP exactly as they would to a production cluster.

Contracts:

* :func:`ensure_jars` fetches the broker's runtime classpath once with Maven into a cache
  directory and reuses it afterwards. A fetch is complete only when its marker file exists, so an
  interrupted fetch is redone, never half-used.
* :class:`KafkaBroker` formats storage, launches the JVM in its own process group, and returns
  from :meth:`KafkaBroker.start` only once a real client request (``DescribeCluster``) has been
  answered with this broker registered and unfenced. :meth:`KafkaBroker.stop` is idempotent and
  always reaps the JVM (SIGTERM, then SIGKILL); it is also registered with :mod:`atexit`, and on
  Linux the JVM gets SIGTERM if the process that started it dies.
* The broker is configured so that idempotent producers, transactions and consumer groups work
  on one node (every internal topic has replication factor 1 and min ISR 1).

Modules: ``jars`` (the Maven fetch), ``config`` (JVM options, ``server.properties``, log4j, the
CDS archive), ``process`` (process groups, ports, the readiness probe), ``broker``
(:class:`KafkaBroker`), ``serve`` (:func:`serve_forever` and the command line), ``errors``.
Every name is importable from this package.
"""

from __future__ import annotations

from devtools.kafka_broker.broker import STOP_TIMEOUT_S as STOP_TIMEOUT_S
from devtools.kafka_broker.broker import KafkaBroker
from devtools.kafka_broker.config import CDS_ENV as CDS_ENV
from devtools.kafka_broker.config import JVM_OPTIONS as JVM_OPTIONS
from devtools.kafka_broker.config import _cluster_id as _cluster_id
from devtools.kafka_broker.config import server_properties as server_properties
from devtools.kafka_broker.errors import JarFetchError, KafkaBrokerError
from devtools.kafka_broker.jars import KAFKA_VERSION, ensure_jars
from devtools.kafka_broker.jars import MARKER_NAME as MARKER_NAME
from devtools.kafka_broker.jars import MAVEN_TIMEOUT_S as MAVEN_TIMEOUT_S
from devtools.kafka_broker.jars import POM_PATH as POM_PATH
from devtools.kafka_broker.jars import default_cache_dir as default_cache_dir
from devtools.kafka_broker.process import stop_group
from devtools.kafka_broker.serve import main as main
from devtools.kafka_broker.serve import serve_forever

__all__ = [
    "KAFKA_VERSION",
    "JarFetchError",
    "KafkaBroker",
    "KafkaBrokerError",
    "ensure_jars",
    "serve_forever",
    "stop_group",
]
