"""A local stand-in for a Kubernetes cluster, for the demo, the tests and the benchmarks.

Two parts that do not import each other: ``server`` (the API server and its
store, speaking the real REST protocol) and ``sim`` (the Deployment
controller, the Gateway implementation and the traffic data plane, which
read and write the cluster only through the `ClusterView` protocol, so they
run in-process or against any API server). Joining them, here: ``cluster``
starts the whole thing, ``store_view`` lets the simulators use the store
directly, ``labels`` holds the selector matching both parts share,
``apply`` creates manifests over HTTP, and ``prometheus_server`` runs a real
Prometheus beside it. The controller itself never imports this package.
"""
