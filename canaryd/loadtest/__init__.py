"""``canaryd loadtest``: traffic for canaries that get none, sent only where its configuration allows.

A canary that receives no organic traffic cannot be judged: its success rate
is "no data". Canary ``rollout`` webhooks call this service at every step; it
reads the webhook payload (``webhooks.canaryd.io/v1``), and sends HTTP or gRPC
requests to the canary's Service at the rate and concurrency the webhook's
metadata asks for, for the step's duration. It only ever sends to
Kubernetes Services (``<service>.<namespace>[.svc[.<cluster domain>]]``) in
namespaces it was told to serve, resolved and pinned before the first
request: never to an arbitrary URL, an IP literal or a host outside the
cluster.

The package uses the controller's pure layers (core, api) for the payload
and signature contract, and nothing else of it; it runs as its own
Deployment (``manifests/loadtester``).
"""
