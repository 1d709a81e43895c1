"""The scoring API's HTTP surface: typed request/response models and the FastAPI app that the
BentoML service mounts. Routes call the engine; errors map to 4xx JSON bodies `{"error": ...}`
that name the id or the limit, never a 500 for bad input."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from features.store import NoFeaturesError, UnknownEntityError
from serving.engine import NotReadyError

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


def build_app() -> FastAPI:
    """The FastAPI app; routes are attached as class views of the BentoML service, which
    sets `app.state.api_key` from the settings when it starts."""
    app = FastAPI(
        title="CLV scoring API",
        description="Scores by entity id from the champion models and Feast features.",
        version="1",
        docs_url=None,  # BentoML serves the OpenAPI page (with these routes) at /
        redoc_url=None,
    )
    app.state.api_key = None

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        detail = first.get("msg", "invalid request")
        return _error(400, f"invalid request{' at ' + where if where else ''}: {detail}")

    @app.exception_handler(UnknownEntityError)
    async def _unknown(_: Request, exc: UnknownEntityError) -> JSONResponse:
        return _error(404, str(exc.args[0]))

    @app.exception_handler(NoFeaturesError)
    async def _no_features(_: Request, exc: NoFeaturesError) -> JSONResponse:
        return _error(409, str(exc.args[0]))

    @app.exception_handler(NotReadyError)
    async def _not_ready(_: Request, exc: NotReadyError) -> JSONResponse:
        return _error(503, f"not ready: {exc.args[0]}")

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Any:
        path = request.url.path
        if path in SCORING_PATHS:
            api_key = getattr(request.app.state, "api_key", None)
            if api_key is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                    return _error(401, "missing or wrong bearer key")
            if request.method == "POST":
                kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind != "application/json":
                    return _error(400, "the body must be JSON (Content-Type: application/json)")
        return await call_next(request)

    return app
