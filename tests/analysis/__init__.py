"""Tests of the ready-made MetricTemplates in analysis/."""
