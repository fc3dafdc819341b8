"""Patch and selector semantics at the function level (RFC 7386 vectors, strategic merge, selectors)."""

from __future__ import annotations

import pytest

from canaryd.sandbox.labels import labels_match, matches_label_selector
from canaryd.sandbox.server.errors import ApiError
from canaryd.sandbox.server.patching import merge_patch, strategic_merge_patch
from canaryd.sandbox.server.selectors import parse_label_selector

# The examples of RFC 7386, appendix A.
RFC7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "expected"), RFC7386)
def test_merge_patch_follows_rfc_7386(original: object, patch: object, expected: object) -> None:
    assert merge_patch(original, patch) == expected


def test_merge_patch_leaves_its_input_alone() -> None:
    original = {"a": {"b": 1}}
    merge_patch(original, {"a": {"c": 2}})
    assert original == {"a": {"b": 1}}


def test_strategic_merge_keeps_list_items_not_named_in_the_patch() -> None:
    original = {
        "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}], "args": ["x", "y"]}
    }
    patched = strategic_merge_patch(
        original, {"spec": {"containers": [{"name": "b", "image": "2"}], "args": ["z"]}}
    )
    assert patched["spec"]["containers"] == [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]
    assert patched["spec"]["args"] == ["z"]  # lists without a merge key are replaced


def test_strategic_merge_replace_and_retain_keys_directives() -> None:
    original = {
        "spec": {
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "containers": [{"name": "a"}],
        }
    }
    patched = strategic_merge_patch(
        original,
        {
            "spec": {
                "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                "containers": [{"name": "z"}, {"$patch": "replace"}],
            }
        },
    )
    assert patched["spec"]["strategy"] == {"type": "Recreate"}
    assert patched["spec"]["containers"] == [{"name": "z"}]


def test_strategic_merge_unions_finalizers_and_deletes_from_primitive_lists() -> None:
    original = {"metadata": {"finalizers": ["a", "b"]}}
    assert strategic_merge_patch(original, {"metadata": {"finalizers": ["c", "a"]}})["metadata"][
        "finalizers"
    ] == ["a", "b", "c"]
    assert strategic_merge_patch(original, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})[
        "metadata"
    ]["finalizers"] == ["b"]


@pytest.mark.parametrize("text", ["a=b=c", "in (x)", "a in x", "a notin", "=b", "a!!=b"])
def test_malformed_label_selectors_are_400(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_label_selector(text)
    assert caught.value.code == 400


def test_structured_label_selectors() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "track", "operator": "NotIn", "values": ["canary"]},
            {"key": "tier", "operator": "Exists"},
        ],
    }
    assert matches_label_selector(selector, {"app": "web", "tier": "fe"})
    assert not matches_label_selector(selector, {"app": "web", "tier": "fe", "track": "canary"})
    assert not matches_label_selector(selector, {"app": "web"})
    assert matches_label_selector({}, {"anything": "x"})
    assert not matches_label_selector(None, {"anything": "x"})
    assert labels_match(parse_label_selector("app in (web, api)"), {"app": "api"})
