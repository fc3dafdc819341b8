"""canaryd: canary releases on Gateway API routes, judged by Prometheus.

The package is layered so that every decision can be tested without a cluster:
``api`` (resource models) under ``core`` (pure decisions) under ``adapters``
(Kubernetes, Prometheus, scheduler I/O) under ``runtime`` (workers, leader
election, endpoints) under ``cli``. ``sandbox`` is a local stand-in cluster
used by tests, benchmarks and the demo; the controller never imports it.
"""

__version__ = "0.1.0"
