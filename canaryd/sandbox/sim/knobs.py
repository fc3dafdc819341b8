"""The sandbox's knobs: annotations that tell the simulators how a revision or a route behaves.

They are how a person makes a bad release on the sandbox with one line (an
error rate on the pod template) and how the tests set a request rate. A real
cluster ignores them; only the simulators read them, so they live here and
not among canaryd's public API names. Their spellings are documented in the
README ("The sandbox") and used by the sample manifests.
"""

from __future__ import annotations

from typing import Final

#: On a Deployment's pod template: the share of its requests answered 500, e.g. "0.3".
ANNOTATION_ERROR_RATE: Final = "sandbox.canaryd.io/error-rate"
#: On a Deployment's pod template: the mean latency in milliseconds.
ANNOTATION_LATENCY_MS: Final = "sandbox.canaryd.io/latency-ms"
#: On a Deployment's pod template: "true" keeps its pods from ever becoming ready.
ANNOTATION_NEVER_READY: Final = "sandbox.canaryd.io/never-ready"
#: On a Deployment's pod template: seconds between one pod becoming ready and the next, e.g. "2"
#: (the first is ready after the simulator's ready delay); unset or 0: all at once.
ANNOTATION_READY_INTERVAL: Final = "sandbox.canaryd.io/ready-interval-seconds"
#: On an HTTPRoute or GRPCRoute: simulated requests per second.
ANNOTATION_RPS: Final = "sandbox.canaryd.io/rps"
#: On a route: the share of requests that carry the headers its header-matching rule asks for.
ANNOTATION_HEADER_SHARE: Final = "sandbox.canaryd.io/header-share"
