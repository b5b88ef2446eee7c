"""The route table and what every route shares: declared parameters and bodies validated by the
same pydantic models that `/openapi.json` is built from, bearer tokens by scope, JSON errors with
a request id, and responses serialised from their declared model.

Every route has an access level. `probe` (`/livez`, `/readyz`) needs no token. `read` (every other
GET) needs a read, serve or admin token once FCL_READ_TOKEN is set, and none before. `serve` (an
artifact's download) needs the serve or the admin token. `admin` (every POST, the kept dead
letters) needs the admin token, FCL_API_TOKEN. No token, or one that is none of the service's,
answers 401; a token of a narrower scope answers 403.

An `Endpoint` says everything about one route; `register` mounts the table on an aiohttp app and
`openapi` turns the same table into the document. A handler receives a `Call` (validated path
parameters, query and body) and returns `(status, model)` or a ready `web.Response`."""

from __future__ import annotations

import hmac
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import JsonSchemaMode

from fcl.web.schemas import ErrorBody, ErrorDetail

log = logging.getLogger("fcl.web")

# Where a request keeps its id (aiohttp >= 3.12 has typed request keys; older ones take a string).
_RID: Any = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_WHO: Any = web.RequestKey("caller", str) if hasattr(web, "RequestKey") else "caller"

Access = Literal["probe", "read", "serve", "admin"]
_MAY = {"read": {"read", "serve", "admin"}, "serve": {"serve", "admin"}, "admin": {"admin"}}


@dataclass(frozen=True)
class Tokens:
    """The service's bearer tokens by scope (unset: None)."""

    admin: str | None = None  # FCL_API_TOKEN
    serve: str | None = None  # FCL_SERVE_TOKEN
    read: str | None = None  # FCL_READ_TOKEN
    admin_name: str = "operator"  # FCL_API_TOKEN_NAME: the ledger's actor for an admin call


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


@dataclass(frozen=True)
class PathParam:
    name: str
    schema: dict[str, Any]
    description: str
    parse: Callable[[str], Any] = str  # raises ApiError for a value it refuses


@dataclass(frozen=True)
class Call:
    request: web.Request
    path: dict[str, Any]
    query: Any
    body: Any


Handler = Callable[[Call], Awaitable["tuple[int, BaseModel] | web.StreamResponse"]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    responses: dict[int, tuple[type[BaseModel], str]]  # status -> (model, description)
    path_params: tuple[PathParam, ...] = ()
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    access: Access = "read"
    errors: tuple[int, ...] = ()
    raw_content: dict[int, tuple[str, str]] = field(default_factory=dict)  # status -> (media type, description)
    description: str = ""

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def auth(self) -> bool:
        """Whether a token is always needed (serve and admin routes)."""
        return self.access in ("serve", "admin")


def request_id(request: web.Request) -> str:
    rid = request.get(_RID)
    if rid is None:
        given = request.headers.get("X-Request-Id", "")
        rid = given if _SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex
        request[_RID] = rid
    return str(rid)


def error_response(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, request_id=request_id(request), details=details))
    return web.Response(
        status=status,
        body=body.model_dump_json(exclude_none=True).encode(),
        content_type="application/json",
        headers=headers,
    )


def json_response(status: int, model: BaseModel) -> web.Response:
    return web.Response(status=status, body=model.model_dump_json().encode(), content_type="application/json")


def _field_errors(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    return [
        {"location": where, "field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def _scope_of(request: web.Request, tokens: Tokens) -> str | None:
    """The scope of the request's bearer token (admin, serve or read); None without one; 401 for a
    token that is none of the service's."""
    given = request.headers.get("Authorization", "")
    if not given:
        return None
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "unauthorized", "send `Authorization: Bearer <token>`")
    presented = value.strip().encode()
    found = None
    for scope, token in (("admin", tokens.admin), ("serve", tokens.serve), ("read", tokens.read)):
        # every comparison runs, in constant time: which token matched is not timed out of it
        if token is not None and hmac.compare_digest(presented, token.encode()) and found is None:
            found = scope
    if found is None:
        raise ApiError(401, "unauthorized", "the bearer token is none of the service's tokens")
    return found


def _check_access(request: web.Request, endpoint: Endpoint, tokens: Tokens) -> str | None:
    """The caller's scope, when the route may be called with what the request carries; else 401
    or 403."""
    if endpoint.access == "probe":
        return None
    if endpoint.access == "read" and tokens.read is None:
        return None  # reads are open until FCL_READ_TOKEN is set, whatever the request carries
    if endpoint.access == "admin" and tokens.admin is None:
        raise ApiError(401, "unauthorized", "mutating calls are refused: the service has no FCL_API_TOKEN set")
    if endpoint.access == "serve" and tokens.admin is None and tokens.serve is None:
        raise ApiError(401, "unauthorized", "the service has no FCL_SERVE_TOKEN or FCL_API_TOKEN set")
    scope = _scope_of(request, tokens)
    if scope is None:
        needed = {"read": "FCL_READ_TOKEN", "serve": "FCL_SERVE_TOKEN", "admin": "FCL_API_TOKEN"}[endpoint.access]
        raise ApiError(401, "unauthorized", f"send `Authorization: Bearer <{needed}>` (or a wider token)")
    if scope not in _MAY[endpoint.access]:
        raise ApiError(
            403,
            "forbidden",
            f"the {scope} token may not call {endpoint.method} {endpoint.path}: it needs the "
            + ("admin token (FCL_API_TOKEN)" if endpoint.access == "admin" else "serve or the admin token"),
        )
    return scope


def caller_scope(request: web.Request) -> str | None:
    """The scope of the token the request was let in with (None: no token was needed or sent)."""
    return request.get(_WHO)


async def _read_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    raw = await request.read()  # aiohttp refuses more than client_max_size with 413
    if not raw:  # no body: the defaults; anything else must be a JSON object
        data: Any = {}
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_body", "the body has invalid fields", _field_errors(exc, "body")) from None


def _wrap(endpoint: Endpoint, tokens: Callable[[], Tokens]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        # before anything else: no state change, and no data, without the token's scope
        request[_WHO] = _check_access(request, endpoint, tokens())
        path = {p.name: p.parse(request.match_info[p.name]) for p in endpoint.path_params}
        query = None
        if endpoint.query is not None:
            try:
                query = endpoint.query.model_validate(dict(request.query))
            except ValidationError as exc:
                raise ApiError(
                    422, "invalid_query", "the query has invalid parameters", _field_errors(exc, "query")
                ) from None
        body = await _read_body(request, endpoint.body) if endpoint.body is not None else None
        result = await endpoint.handler(Call(request, path, query, body))
        if isinstance(result, web.StreamResponse):
            return result
        status, model = result
        return json_response(status, model)

    handle.__name__ = endpoint.operation_id
    return handle


def register(app: web.Application, endpoints: list[Endpoint], tokens: Callable[[], Tokens]) -> None:
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, _wrap(endpoint, tokens), name=endpoint.operation_id)


# -- OpenAPI ----------------------------------------------------------------------------------------
_REF = "#/components/schemas/{model}"


def _schema(model: type[BaseModel], mode: JsonSchemaMode, components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF, mode=mode)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent, never null: drop the null branch pydantic adds to Optional."""
    schema = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        if len(branches) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**branches[0], **rest}
    return schema


_STATUS_TEXT = {
    400: "malformed request",
    401: "missing or wrong bearer token (reads: only once FCL_READ_TOKEN is set)",
    403: "the token's scope does not reach this route",
    404: "not found",
    409: "conflicts with the current state",
    410: "gone: removed by the retention",
    413: "body too large",
    422: "invalid parameters or body",
    503: "a dependency is unavailable",
}


def openapi(endpoints: list[Endpoint], *, title: str, version: str, description: str) -> dict[str, Any]:
    components: dict[str, Any] = {}
    error_ref = _schema(ErrorBody, "serialization", components)
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        op: dict[str, Any] = {"operationId": e.operation_id, "summary": e.summary, "tags": [e.tag], "responses": {}}
        if e.description:
            op["description"] = e.description
        params: list[dict[str, Any]] = [
            {"name": p.name, "in": "path", "required": True, "description": p.description, "schema": p.schema}
            for p in e.path_params
        ]
        if e.query is not None:
            schema = e.query.model_json_schema(ref_template=_REF, mode="validation")
            components.update(schema.pop("$defs", {}))
            required = set(schema.get("required", []))
            for name, prop in schema["properties"].items():
                prop = _without_null(prop)
                param = {"name": name, "in": "query", "required": name in required, "schema": prop}
                if "description" in prop:
                    param["description"] = prop["description"]
                params.append(param)
        if params:
            op["parameters"] = params
        if e.body is not None:
            op["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": _schema(e.body, "validation", components)}},
            }
        for status, (model, text) in e.responses.items():
            op["responses"][str(status)] = {
                "description": text,
                "content": {"application/json": {"schema": _schema(model, "serialization", components)}},
            }
        for status, (media, text) in e.raw_content.items():
            raw_schema = {"type": "object"} if media == "application/json" else {"type": "string"}
            op["responses"][str(status)] = {"description": text, "content": {media: {"schema": raw_schema}}}
        scoped = {"probe": set(), "read": {401}, "serve": {401, 403}, "admin": {401, 403}}[e.access]
        errors = set(e.errors) | scoped | ({422} if e.query or e.body else set())
        errors |= {422 for p in e.path_params if p.schema.get("format") == "uuid"}  # a malformed id
        if e.body is not None:
            errors |= {400, 413}
        for status in sorted(errors):
            op["responses"][str(status)] = {
                "description": _STATUS_TEXT.get(status, "error"),
                "content": {"application/json": {"schema": error_ref}},
            }
        if e.auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "FCL_API_TOKEN (admin), FCL_SERVE_TOKEN (reads and downloads) or FCL_READ_TOKEN "
                    "(reads, once it is set)",
                }
            },
        },
    }
