"""Observability: Prometheus metrics, structured logs, request ids.

``mediamill.observability.metrics`` holds the counters the engine records;
``mediamill.observability.logging`` configures structlog and binds job/request ids.
Importing this package loads nothing heavy.
"""
