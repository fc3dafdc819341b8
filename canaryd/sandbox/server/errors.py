"""Errors of the sandbox API server, shaped exactly like kube-apiserver's Status.

Clients (kubectl, kubernetes_asyncio, the controller's retry logic) branch on
the HTTP code, `reason` and `details`; a stand-in that answered with ad-hoc
bodies would let code pass here that breaks on a real cluster. Every failure
the store or the HTTP layer raises is an `ApiError`, rendered by `status_body`.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failure with the HTTP code, reason and details a real API server gives."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        name: str | None = None,
        group: str | None = None,
        kind: str | None = None,
        causes: list[dict[str, str]] | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = causes
        self.retry_after_seconds = retry_after_seconds

    def status(self) -> dict[str, Any]:
        """The `Status` object sent as the response body (or inside a watch ERROR event)."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details: dict[str, Any] = {}
        if self.name is not None:
            details["name"] = self.name
        if self.group is not None:
            details["group"] = self.group
        if self.kind is not None:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after_seconds is not None:
            details["retryAfterSeconds"] = self.retry_after_seconds
        if details:
            body["details"] = details
        return body


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(resource, group)} "{name}" not found',
        name=name,
        group=group,
        kind=resource,
    )


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(resource, group)} "{name}" already exists',
        name=name,
        group=group,
        kind=resource,
    )


def conflict(resource: str, group: str, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {why}',
        name=name,
        group=group,
        kind=resource,
    )


def invalid(kind: str, group: str, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid, the message listing each cause as `field: message` like kube-apiserver."""
    listed = ", ".join(f"{c.get('field', '')}: {c.get('message', '')}".lstrip(": ") for c in causes)
    if len(causes) > 1:
        listed = f"[{listed}]"  # several errors print as an aggregate, as kube-apiserver does
    label = f"{kind}.{group}" if group else kind
    return ApiError(
        422,
        "Invalid",
        f'{label} "{name}" is invalid: {listed}' if listed else f'{label} "{name}" is invalid',
        name=name,
        group=group,
        kind=kind,
        causes=causes,
    )


def unprocessable(message: str) -> ApiError:
    """422 for a patch that cannot be applied (e.g. a failed JSON Patch `test`)."""
    return ApiError(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        causes=[{"reason": "UnexpectedServerResponse", "message": message}],
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(
    user: str, verb: str, resource: str, group: str, namespace: str | None, name: str | None
) -> ApiError:
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    subject = f'{_qualified(resource, group)} "{name}"' if name else _qualified(resource, group)
    message = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
        f'in API group "{group}"{where}'
    )
    return ApiError(403, "Forbidden", message, name=name, group=group, kind=resource)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
    )


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def internal(message: str) -> ApiError:
    return ApiError(
        500, "InternalError", f"Internal error occurred: {message}", causes=[{"message": message}]
    )


def unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message, retry_after_seconds=1)


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")
