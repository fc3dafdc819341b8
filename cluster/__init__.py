"""A real Kubernetes control plane for canaryd's tests, built from Go modules and run on loopback.

``cluster.build`` builds and caches the binaries (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl, kwok, optionally helm) and the Gateway API CRDs, keyed by version, outside
the checkout. ``cluster.harness`` starts them as one cluster with fake (kwok) nodes. ``cluster.cli``
is what ``scripts/cluster`` runs. ``cluster.dataplane`` adds a real data plane: the pod CIDR in a
network namespace (``cluster.podnet``), every Ready pod answered on its IP (``cluster.app``), Traefik
as the Gateway, and a load generator that measures the canary's share (``cluster.load``).
"""
