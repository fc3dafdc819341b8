"""The sandbox's API server: the Kubernetes REST protocol over an in-process object store.

Everything a client of a real kube-apiserver relies on lives here: the store
(resourceVersions, uids, generations, finalizers, garbage collection), the
kinds it serves and their defaults and validation (CRD schemas and CEL
rules included), patches, selectors, watches, discovery, Table and protobuf
bodies, and what only a test server has: fault injection and an audit log.
Nothing here knows the simulators in ``canaryd.sandbox.sim``; they are
clients like any other.
"""
