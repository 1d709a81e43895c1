"""The BentoML service: `bentoml serve serving.service:Scoring` (what `clv serve` runs).

The class loads what it needs once in `__init__` (settings, the engine with its champions
and Feast store) and exposes small typed routes; all scoring maths lives in
`serving.scoring` and `serving.engine`.
"""

from __future__ import annotations

import bentoml
from fastapi.responses import JSONResponse

from clv.compose import engine_config
from clv.settings import Settings
from serving.api import (
    ERRORS,
    BatchRequest,
    CustomerRequest,
    CustomerScores,
    DormantScores,
    LeadRequest,
    ModelsResponse,
    build_app,
)
from serving.engine import Engine

app = build_app()


@bentoml.service(name="clv_scoring", traffic={"timeout": 60})
@bentoml.asgi_app(app, path="/")
class Scoring:
    """Entity id -> online features -> champion models -> scores, reasons, percentiles."""

    def __init__(self) -> None:
        self.settings = Settings()
        key = self.settings.api_key
        app.state.api_key = key.get_secret_value() if key is not None else None
        self.engine = Engine(engine_config(self.settings))
        self.engine.start(background=True)

    def __is_ready__(self) -> bool:
        return self.engine.ready

    @bentoml.api(route="/ping")
    def ping(self) -> str:
        """A constant answer: the framework's own cost, for benchmarks."""
        return "pong"

    @app.post("/score", response_model=CustomerScores, responses=ERRORS)
    def score(self, body: CustomerRequest) -> CustomerScores:
        """Every customer model's score for one customer."""
        return CustomerScores(**self.engine.score_customers([body.customer_id])[0])

    @app.post("/score_lead", response_model=DormantScores, responses=ERRORS)
    def score_lead(self, body: LeadRequest) -> DormantScores | JSONResponse:
        """The reactivation score of an aged lead (lead_id) or former customer (customer_id)."""
        if (body.lead_id is None) == (body.customer_id is None):
            return JSONResponse({"error": "give exactly one of lead_id, customer_id"}, 400)
        key = "lead_id" if body.lead_id is not None else "customer_id"
        identifier = body.lead_id if body.lead_id is not None else body.customer_id
        assert identifier is not None
        return DormantScores(**self.engine.score_dormant(key, identifier))

    @app.post("/score_batch", response_model=list[CustomerScores], responses=ERRORS)
    def score_batch(self, body: BatchRequest) -> list[CustomerScores] | JSONResponse:
        """`/score` for many customers, in request order (up to the batch limit)."""
        limit = self.settings.batch_limit
        if not body.customer_ids:
            return JSONResponse({"error": "customer_ids is empty"}, 400)
        if len(body.customer_ids) > limit:
            return JSONResponse(
                {"error": f"{len(body.customer_ids)} ids exceed the limit of {limit} per batch"},
                413,
            )
        return [CustomerScores(**r) for r in self.engine.score_customers(body.customer_ids)]

    @app.get("/models", response_model=ModelsResponse, responses=ERRORS)
    def models(self) -> ModelsResponse:
        """Loaded model names, versions, aliases, load times, and readiness."""
        return ModelsResponse(**self.engine.models())
