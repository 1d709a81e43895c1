"""The BentoML service: `bentoml serve serving.service:Scoring` (what `clv serve` runs).

The class loads what it needs once in `__init__` (settings, the engine with its champions
and Feast store) and hands the engine to the FastAPI app it mounts, whose routes
(`serving.api`) answer from it; all scoring maths lives in `serving.scoring` and
`serving.engine`. Heavy libraries (Feast, MLflow, XGBoost) are imported by the engine's
loader thread, not here: `bentoml serve` imports this module once in the CLI process and once
in the worker, and neither should wait for them before the server listens.
"""

from __future__ import annotations

import bentoml

from serving.api import build_app

app = build_app()


@bentoml.service(name="clv_scoring", traffic={"timeout": 60})
@bentoml.asgi_app(app, path="/")
class Scoring:
    """Entity id -> online features -> champion models -> scores, reasons, percentiles."""

    def __init__(self) -> None:
        from clv.compose import engine_config
        from clv.settings import Settings
        from serving.engine import Engine

        self.settings = Settings()
        key = self.settings.api_key
        app.state.api_key = key.get_secret_value() if key is not None else None
        app.state.batch_limit = self.settings.batch_limit
        self.engine = Engine(engine_config(self.settings))
        app.state.engine = self.engine
        self.engine.start(background=True)

    def __is_ready__(self) -> bool:
        return self.engine.ready

    @bentoml.api(route="/ping")
    def ping(self) -> str:
        """A constant answer: the framework's own cost, for benchmarks."""
        return "pong"
