"""The sandbox's simulators: what a cluster's controllers and data plane would do, as API clients.

A Deployment controller that makes pods ready, a Gateway API implementation
that accepts Gateways and routes, and a data plane that carries simulated
traffic and exports it for Prometheus. They read, watch and write the cluster
only through the small `ClusterView` protocol (``cluster_view``), so they run
against the sandbox's own store in-process or against any API server over
HTTP. Nothing here imports ``canaryd.sandbox.server``.
"""
