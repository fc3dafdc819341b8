"""Revision identity: the same template always hashes the same, a real change never does."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canaryd.core.revision import (
    REVISION_ANNOTATION,
    deployment_template_hash,
    primary_revision,
    template_hash,
)

TEMPLATE = {
    "metadata": {"labels": {"app": "payments-api"}, "annotations": {"team": "payments"}},
    "spec": {"containers": [{"name": "app", "image": "payments:1.0", "env": [{"name": "A", "value": "1"}]}]},
}


def test_key_order_and_server_defaults_do_not_change_the_hash():
    shuffled = {"spec": TEMPLATE["spec"], "metadata": {**TEMPLATE["metadata"], "creationTimestamp": None}}
    assert template_hash(shuffled) == template_hash(TEMPLATE)


def test_canaryd_annotations_do_not_change_the_hash():
    marked = copy.deepcopy(TEMPLATE)
    marked["metadata"]["annotations"]["canaryd.io/revision"] = "abc"
    assert template_hash(marked) == template_hash(TEMPLATE)


def test_image_change_is_a_new_revision():
    changed = copy.deepcopy(TEMPLATE)
    changed["spec"]["containers"][0]["image"] = "payments:1.1"
    assert template_hash(changed) != template_hash(TEMPLATE)


def test_sandbox_knob_on_the_template_is_a_new_revision():
    changed = copy.deepcopy(TEMPLATE)
    changed["metadata"]["annotations"]["sandbox.canaryd.io/error-rate"] = "0.2"
    assert template_hash(changed) != template_hash(TEMPLATE)


@given(st.text(min_size=1, max_size=20), st.text(max_size=20))
def test_any_env_change_changes_the_hash(name, value):
    changed = copy.deepcopy(TEMPLATE)
    changed["spec"]["containers"][0]["env"].append({"name": name, "value": value})
    assert template_hash(changed) != template_hash(TEMPLATE)


def test_deployment_and_primary_revision():
    deployment = {"spec": {"template": TEMPLATE}}
    assert deployment_template_hash(deployment) == template_hash(TEMPLATE)
    assert primary_revision({"metadata": {"annotations": {REVISION_ANNOTATION: "feed"}}}) == "feed"
    assert primary_revision({"metadata": {}}) == ""


@pytest.mark.parametrize("metadata", ["a string", 3, ["x"], {"annotations": "a string"}, {"annotations": 7}])
def test_a_template_the_api_server_would_refuse_still_has_a_stable_hash(metadata) -> None:
    # Found by the hostile corpus: annotations given as a string raised inside every reconcile.
    broken = {"metadata": metadata, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
    assert template_hash(broken) == template_hash(copy.deepcopy(broken))
    other = copy.deepcopy(broken)
    other["spec"]["containers"][0]["image"] = "app:2"
    assert template_hash(other) != template_hash(broken)
