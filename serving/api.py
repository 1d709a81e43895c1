"""The scoring API's HTTP surface: typed request/response models and the FastAPI app that the
BentoML service mounts. Routes call the engine; errors map to 4xx JSON bodies `{"error": ...}`
that name the id or the limit, never a 500 for bad input.

The hot routes are lean on purpose: they are plain async routes reading the engine from
`app.state` (BentoML's class views resolve `self` through a sync dependency, one thread-pool
hop per request), they parse the body with one pydantic pass, answer from the snapshot's
pre-serialised JSON on the event loop (only ids outside the snapshot go to a worker thread
for the online store), and the key and content-type guard is plain ASGI middleware.
"""

from __future__ import annotations

import hmac
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from features.store import NoFeaturesError, UnknownEntityError
from serving.engine import Engine, NotReadyError

SCORING_PATHS = ("/score", "/score_lead", "/score_batch", "/models")


class Reason(BaseModel):
    feature: str
    value: float | None = Field(description="The feature's value (null = not observed).")
    contribution: float = Field(description="Signed contribution to the score (log-odds).")


class ModelScore(BaseModel):
    score: float = Field(description="Calibrated probability (expected 12-month revenue: clv).")
    percentile: float = Field(ge=0, le=100, description="Within the champion's test population.")
    band: str = Field(description="low / medium / high (top 20% high, next 30% medium).")
    model: str
    version: str
    reasons: list[Reason]


class CustomerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: StrictStr = Field(min_length=1, max_length=64, examples=["C0000042"])


class LeadRequest(BaseModel):
    """An aged lead by `lead_id`, or a former customer by `customer_id` (exactly one)."""

    model_config = ConfigDict(extra="forbid")
    lead_id: StrictStr | None = Field(default=None, min_length=1, max_length=64)
    customer_id: StrictStr | None = Field(default=None, min_length=1, max_length=64)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_ids: list[StrictStr] = Field(description="Up to the batch limit (default 1,000).")


class CustomerScores(BaseModel):
    customer_id: str
    features_as_of: str | None = Field(description="Cutoff date of the features used.")
    churn: ModelScore | None = None
    expansion: ModelScore | None = None
    referral: ModelScore | None = None
    clv: ModelScore | None = None


class DormantScores(BaseModel):
    lead_id: str | None = None
    customer_id: str | None = None
    features_as_of: str | None
    reactivation: ModelScore


class LoadedModel(BaseModel):
    name: str
    loaded: bool
    version: str | None = None
    feature_service: str | None = None
    loaded_at: str | None = None
    features: int | None = None
    aliases: dict[str, str] | None = None
    load_error: str | None = None


class ModelsResponse(BaseModel):
    ready: bool
    not_ready_reason: str | None
    features_as_of: str | None
    snapshot_built_at: str | None
    models: list[LoadedModel]


class ErrorBody(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "Malformed body or wrong types"),
        (401, "Missing or wrong bearer key (when CLV_API_KEY is set)"),
        (404, "Unknown id"),
        (409, "Known id without features yet"),
        (413, "Batch larger than the limit"),
        (503, "No champion loaded yet"),
    )
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BadRequest(ValueError):
    """A body that does not parse or validate (answered 400)."""


def _message(exc: ValidationError | RequestValidationError) -> str:
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    detail = first.get("msg", "invalid request")
    return f"invalid request{' at ' + where if where else ''}: {detail}"


Body = TypeVar("Body", bound=BaseModel)


async def _parse(request: Request, model: type[Body]) -> Body:
    """The request body validated as `model`, in one pass from the raw bytes."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise BadRequest(_message(exc)) from exc


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body of a route that parses `model` itself."""
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": schema}}


def _json(content: bytes) -> Response:
    return Response(content, media_type="application/json")


def _engine(request: Request) -> Engine:
    engine = request.app.state.engine
    if engine is None:
        raise NotReadyError("starting")
    return engine  # type: ignore[no-any-return]


async def _customers(engine: Engine, ids: list[str]) -> list[bytes]:
    """JSON answers of `ids`: from the snapshot on the event loop, else in a worker thread."""
    found = engine.snapshot_json(ids)
    if found is not None:
        return found
    return await run_in_threadpool(engine.customer_json, ids)


class Guard:
    """Bearer key (when `api_key` is set on the app's state) and JSON content type on the
    scoring routes, as plain ASGI middleware; health and metrics stay open."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in SCORING_PATHS:
            problem = self._problem(scope)
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _problem(scope: Scope) -> JSONResponse | None:
        headers = dict(scope["headers"])
        api_key = getattr(scope["app"].state, "api_key", None)
        if api_key is not None:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {api_key}".encode()):
                return _error(401, "missing or wrong bearer key")
        if scope["method"] == "POST":
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json":
                return _error(400, "the body must be JSON (Content-Type: application/json)")
        return None


def build_app() -> FastAPI:
    """The FastAPI app. The BentoML service sets `app.state.engine`, `app.state.api_key` and
    `app.state.batch_limit` from the settings when it starts."""
    app = FastAPI(
        title="CLV scoring API",
        description="Scores by entity id from the champion models and Feast features.",
        version="1",
        docs_url=None,  # BentoML serves the OpenAPI page (with these routes) at /
        redoc_url=None,
    )
    app.state.engine = None
    app.state.api_key = None
    app.state.batch_limit = 1000

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _message(exc))

    @app.exception_handler(BadRequest)
    async def _bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(UnknownEntityError)
    async def _unknown(_: Request, exc: UnknownEntityError) -> JSONResponse:
        return _error(404, str(exc.args[0]))

    @app.exception_handler(NoFeaturesError)
    async def _no_features(_: Request, exc: NoFeaturesError) -> JSONResponse:
        return _error(409, str(exc.args[0]))

    @app.exception_handler(NotReadyError)
    async def _not_ready(_: Request, exc: NotReadyError) -> JSONResponse:
        return _error(503, f"not ready: {exc.args[0]}")

    app.add_middleware(Guard)

    @app.post(
        "/score",
        response_model=CustomerScores,
        responses=ERRORS,
        openapi_extra=_body(CustomerRequest),
    )
    async def score(request: Request) -> Response:
        """Every customer model's score for one customer."""
        body = await _parse(request, CustomerRequest)
        return _json((await _customers(_engine(request), [body.customer_id]))[0])

    @app.post(
        "/score_lead",
        response_model=DormantScores,
        responses=ERRORS,
        openapi_extra=_body(LeadRequest),
    )
    async def score_lead(request: Request) -> Response:
        """The reactivation score of an aged lead (lead_id) or former customer (customer_id)."""
        body = await _parse(request, LeadRequest)
        if (body.lead_id is None) == (body.customer_id is None):
            return _error(400, "give exactly one of lead_id, customer_id")
        key = "lead_id" if body.lead_id is not None else "customer_id"
        identifier = body.lead_id if body.lead_id is not None else body.customer_id
        assert identifier is not None
        result = await run_in_threadpool(_engine(request).score_dormant, key, identifier)
        return _json(DormantScores(**result).model_dump_json().encode())

    @app.post(
        "/score_batch",
        response_model=list[CustomerScores],
        responses=ERRORS,
        openapi_extra=_body(BatchRequest),
    )
    async def score_batch(request: Request) -> Response:
        """`/score` for many customers, in request order (up to the batch limit)."""
        body = await _parse(request, BatchRequest)
        limit = request.app.state.batch_limit
        ids = body.customer_ids
        if not ids:
            return _error(400, "customer_ids is empty")
        if len(ids) > limit:
            return _error(413, f"{len(ids)} ids exceed the limit of {limit} per batch")
        return _json(b"[" + b",".join(await _customers(_engine(request), ids)) + b"]")

    @app.get("/models", response_model=ModelsResponse, responses=ERRORS)
    def models(request: Request) -> ModelsResponse:
        """Loaded model names, versions, aliases, load times, and readiness."""
        return ModelsResponse(**_engine(request).models())

    return app
