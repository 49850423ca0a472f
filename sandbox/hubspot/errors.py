"""HubSpot's error bodies, so a refused request looks to the SDK (and the connector) like HubSpot's own.

Every error carries `status: "error"`, a `message`, a `correlationId` and a `category`; the SDK's `Error`
model requires the last three.
"""

from __future__ import annotations

import uuid


class HubSpotError(Exception):
    """Raised by a handler to answer with a HubSpot error body; `extra` adds fields such as `context`."""

    def __init__(self, status: int, category: str, message: str, **extra) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.extra = extra

    def body(self) -> dict:
        return error_body(self.category, self.message, **self.extra)


def correlation_id() -> str:
    return str(uuid.uuid4())


def error_body(category: str, message: str, **extra) -> dict:
    return {
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
        "category": category,
        **extra,
    }


def validation_error(message: str, **extra) -> HubSpotError:
    return HubSpotError(400, "VALIDATION_ERROR", message, **extra)


def batch_error(
    category: str, message: str, ids: list[str], details: list[dict] | None = None, **extra
) -> dict:
    """One entry of a 207's `errors`: the SDK's StandardError needs context, links, errors, status too."""
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": {"ids": list(ids)},
        "errors": details or [],
        "links": {},
        **extra,
    }
