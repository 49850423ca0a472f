"""Salesforce-shaped HTTP answers shared by the sandbox's REST, Bulk 2.0 and SOAP handlers."""

from __future__ import annotations

import json

from werkzeug.wrappers import Response

JSON_TYPE = "application/json;charset=UTF-8"


class ApiError(Exception):
    """Raised by a REST handler to answer `[{"message", "errorCode"[, "fields"]}]` with `status`."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def response(self) -> Response:
        return error_response(self.status, self.code, self.message, self.fields)


def json_response(data, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(data), status=status, content_type=JSON_TYPE, headers=headers)


def error_response(status: int, code: str, message: str, fields: list[str] | None = None) -> Response:
    """Salesforce's REST error body: a JSON array of `{message, errorCode}` (plus `fields` when it names any)."""
    entry: dict = {"message": message, "errorCode": code}
    if fields is not None:
        entry["fields"] = fields
    return json_response([entry], status)


def read_json(request) -> object:
    try:
        return json.loads(request.get_data() or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")
