"""The dev broker's exceptions."""

from __future__ import annotations

__all__ = ["JarFetchError", "KafkaBrokerError"]


class KafkaBrokerError(RuntimeError):
    """The dev broker could not be provisioned, started or stopped."""


class JarFetchError(KafkaBrokerError):
    """Maven or Java is missing, or Maven could not fetch the broker's jars."""
