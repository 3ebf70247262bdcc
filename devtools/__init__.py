"""Development helpers, not part of the pipeline: the local Kafka broker launcher.

Only ``funnel dev`` and the test fixtures (and the benchmarks) import this package.
"""
