"""The four PATCH flavours a Kubernetes API server accepts.

- JSON merge patch (RFC 7386), what `kubectl annotate/label` and the CLI use;
- JSON Patch (RFC 6902) with `test` operations, which canaryd uses to change
  route weights only if nobody changed them since it looked (a failed test is
  a 422, as on a real server);
- strategic merge patch for built-in kinds, where lists such as containers,
  ports, env and volumes merge by key instead of being replaced
  (`kubectl set image`, client-side `kubectl apply`), with the `$patch`,
  `$retainKeys`, `$setElementOrder/` and `$deleteFromPrimitiveList/` directives;
- server-side apply, approximated as a merge of the applied configuration
  (no field ownership is tracked).
"""

from __future__ import annotations

import json
from typing import Any

import jsonpatch

from canaryd.core.json_values import clone
from canaryd.sandbox.server.errors import ApiError, bad_request, unprocessable

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE_PATCH, JSON_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)


def merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(original: Any, operations: Any) -> Any:
    """RFC 6902. A malformed patch is 400; one that cannot apply (failed `test`, bad path) is 422."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    for operation in operations:
        if not isinstance(operation, dict) or operation.get("op") not in (
            "add",
            "remove",
            "replace",
            "move",
            "copy",
            "test",
        ):
            raise bad_request(
                f"Unexpected kind: {operation.get('op') if isinstance(operation, dict) else operation}"
            )
    document = original
    for operation in operations:
        try:
            document = jsonpatch.JsonPatch([operation]).apply(document)
        except jsonpatch.JsonPatchTestFailed as error:
            raise unprocessable(f"testing value {operation.get('path')} failed: test failed") from error
        except (
            jsonpatch.JsonPatchConflict,
            jsonpatch.JsonPatchException,
            jsonpatch.JsonPointerException,
        ) as error:
            raise unprocessable(
                f"{operation.get('op')} operation does not apply: doc is missing path: "
                f'"{operation.get("path")}": {error}'
            ) from error
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise unprocessable(f"invalid patch: {error}") from error
    return document


# Merge keys of built-in list fields (patchMergeKey in the Kubernetes API types).
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
# Lists of scalars whose patch strategy is "merge" (union instead of replace).
_MERGED_SCALAR_LISTS = {"finalizers"}


def _merge_key(field: str, path: tuple[str, ...]) -> str | None:
    if field == "ports":
        # Container ports merge by containerPort, Service ports by port.
        return (
            "containerPort"
            if any(p in ("containers", "initContainers", "ephemeralContainers") for p in path)
            else "port"
        )
    return _MERGE_KEYS.get(field)


def strategic_merge_patch(original: Any, patch: Any) -> Any:
    """Apply a strategic merge patch to a built-in object."""
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch must be a JSON object")
    return _merge_map(original if isinstance(original, dict) else {}, patch, ())


def _merge_map(original: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: clone(v) for k, v in patch.items() if not k.startswith("$")}
    if directive == "delete":
        return {}
    result = dict(original)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value if isinstance(value, list) else []
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            result[key] = _merge_map(current if isinstance(current, dict) else {}, value, (*path, key))
        elif isinstance(value, list):
            result[key] = _merge_list(current if isinstance(current, list) else [], value, key, (*path, key))
        else:
            result[key] = clone(value)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _apply_order(result[field], order, _merge_key(field, (*path, field)))
    return result


def _merge_list(original: list[Any], patch: list[Any], field: str, path: tuple[str, ...]) -> list[Any]:
    key = _merge_key(field, path[:-1])
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [clone(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if key is None:
        if field in _MERGED_SCALAR_LISTS:
            merged = list(original)
            merged.extend(v for v in patch if v not in merged)
            return merged
        return clone(patch)
    result = [clone(i) for i in original]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            if isinstance(item, dict) and item.get("$patch") == "delete":
                continue
            result.append(clone(item))
            continue
        index = next(
            (
                i
                for i, existing in enumerate(result)
                if isinstance(existing, dict) and existing.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(_merge_map({}, item, path))
        else:
            result[index] = _merge_map(result[index], item, path)
    return result


def _apply_order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def identity(item: Any) -> Any:
        if key is not None and isinstance(item, dict):
            return json.dumps(item.get(key), sort_keys=True)
        return json.dumps(item, sort_keys=True)

    wanted = [identity(o) for o in order]
    position = {w: i for i, w in enumerate(wanted)}
    ordered = sorted(
        enumerate(items), key=lambda pair: position.get(identity(pair[1]), len(wanted) + pair[0])
    )
    return [item for _, item in ordered]


def apply_patch(original: dict[str, Any], body: Any, patch_type: str) -> dict[str, Any]:
    """Apply `body` (already decoded) to `original` by `patch_type`; returns a new object."""
    try:
        if patch_type in (MERGE_PATCH, APPLY_PATCH):
            result = merge_patch(original, body)
        elif patch_type == JSON_PATCH:
            result = json_patch(clone(original), body)
        elif patch_type == STRATEGIC_MERGE_PATCH:
            result = strategic_merge_patch(original, body)
        else:
            raise bad_request(f"unknown patch type {patch_type}")
    except ApiError:
        raise
    if not isinstance(result, dict):
        raise bad_request("the patch did not produce an object")
    return result
