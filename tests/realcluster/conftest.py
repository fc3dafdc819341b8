"""Tests of the real-cluster harness itself.

Its fixtures (``real_cluster``, ``real_namespace``) and the ``realcluster`` marker come from the plugin
``tests.realcluster.fixtures``, which tests/conftest.py loads for the whole suite.
"""
