"""The canaryd.io/v1alpha1 resources as typed models, and the names users rely on.

Everything here mirrors ``manifests/crd``; a test holds the two in agreement.
"""
