"""The HTTP collector (``funnel serve``): validates, enriches and durably hands events on.

An answer of 2xx means durable: in Kafka mode the broker acknowledged the events, in embedded
mode the store committed them. Otherwise the answer is 503 with ``Retry-After``.
"""

from producers.collector.app import create_app
from producers.collector.delivery import Delivery, EmbeddedDelivery, KafkaDelivery, Unavailable
from producers.collector.settings import CollectorSettings

__all__ = [
    "CollectorSettings",
    "Delivery",
    "EmbeddedDelivery",
    "KafkaDelivery",
    "Unavailable",
    "create_app",
]
