"""funnel: the pure core of the funnel tracking pipeline.

Nothing in this package (except :mod:`funnel.cli`, the composition root) performs I/O or
imports Kafka, Faust, ClickHouse, chDB or an HTTP framework; a test enforces it. Adapters in
``producers``, ``stream_processors`` and ``storage`` wrap the core.
"""

__version__ = "0.1.0"
