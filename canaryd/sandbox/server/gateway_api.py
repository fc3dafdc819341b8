"""The Gateway API CRDs the sandbox installs, as a cluster with the standard channel installed has them.

Gateway implementations (Traefik 3.7, built on client-go and the Gateway API
clientset of the release it supports) list and watch the Gateway API kinds at
that release's versions and block until every list answers; kubectl shows them
with `kubectl get crd` and applies an upstream install over them. So the
sandbox does not hand-write these kinds: its store starts with the upstream
CRDs of the standard channel of Gateway API ``VERSION`` installed, as if
someone had run `kubectl apply -f standard-install.yaml`, and serves them like
any CRD (their defaults, bounds and CEL rules are the real ones; deleting one
deletes its kind). They ship as package data (``canaryd/data/gateway-api``,
written by ``packaging/vendor_gateway_api.py`` from the cluster build's copy),
so an installed wheel needs no Go toolchain. The channel's
ValidatingAdmissionPolicy (refusing older CRDs over newer ones) is not part of
it: the sandbox stores admission policies but does not enforce them.
"""

from __future__ import annotations

import functools
import json
import lzma
from typing import Any

from canaryd import data

#: The Gateway API release, and its channel, of the CRDs (cluster/go/gateway-api/go.mod pins the same).
VERSION = "v1.6.3"
CHANNEL = "standard"
#: Where, under canaryd/data, the CRDs are: a JSON list of CustomResourceDefinitions, xz-compressed.
DATA_FILE = ("gateway-api", f"{CHANNEL}-{VERSION}.json.xz")


@functools.cache
def crds() -> tuple[dict[str, Any], ...]:
    """The CRDs (names ``<plural>.gateway.networking.k8s.io``), in file name order, read once.

    Shared by every caller: never change them (copy what you change).
    """
    loaded: list[dict[str, Any]] = json.loads(lzma.decompress(data.path(*DATA_FILE).read_bytes()))
    return tuple(loaded)
