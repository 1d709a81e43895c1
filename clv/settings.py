"""One typed settings object for the whole platform, read from `CLV_*` environment variables.

It is built once at the entry point (the CLI, the service, a test) and passed down; no other
module reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where state lives and which engines the platform talks to."""

    model_config = SettingsConfigDict(env_prefix="CLV_", extra="forbid", validate_default=True)

    home: Path = Field(default=Path("var"), description="Folder holding all local state.")
    seed: int = Field(default=42, description="Seed of the simulator and of every model.")
    scale: float = Field(default=1.0, gt=0, description="Simulator size multiplier.")
    months: int = Field(default=36, ge=13, le=240, description="Months of simulated history.")

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CLV_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI; default sqlite:///$CLV_HOME/mlflow.db.",
    )
    optuna_storage: str | None = Field(
        default=None, description="Optuna storage URL; default sqlite:///$CLV_HOME/optuna.db."
    )
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "127.0.0.1:6379"
    feast_registry: Literal["file", "sql"] = "file"
    feast_registry_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    feast_project: str = Field(default="techflow", pattern=r"^[a-z][a-z0-9_]*$")

    mlflow_backend_store: str | None = Field(
        default=None,
        description="Backend store of `clv tracking-server` (e.g. a postgresql+psycopg:// URL);"
        " default sqlite:///$CLV_HOME/mlflow-server.db.",
    )
    mlflow_host: str = Field(default="127.0.0.1", description="Interface of the tracking server.")
    mlflow_port: int = Field(default=5000, ge=1, le=65535, description="Its port.")

    trials: int = Field(default=30, ge=1, description="Optuna trials per model.")
    train_workers: int = Field(default=1, ge=1, le=64, description="Optuna worker processes.")
    dask_scheduler: str | None = Field(
        default=None,
        description="Refit models through xgboost.dask: 'local' (a local cluster) or a"
        " scheduler address such as tcp://10.0.0.5:8786.",
    )
    dask_workers: int = Field(default=2, ge=1, le=256, description="Workers of a local cluster.")
    demo_trials: int = Field(default=12, ge=1, description="Optuna trials per model in the demo.")
    api_key: SecretStr | None = Field(default=None, description="Bearer key for scoring.")
    port: int = Field(default=3000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    poll_seconds: float = Field(default=10.0, gt=0, description="Champion alias poll interval.")
    batch_limit: int = Field(default=1000, ge=1, description="Most ids per /score_batch.")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def raw_dir(self) -> Path:
        """Raw tables, one parquet file per table."""
        return self.home / "raw"

    @property
    def truth_dir(self) -> Path:
        """Simulator ground truth: read only by evaluation and tests."""
        return self.home / "truth"

    @property
    def features_dir(self) -> Path:
        """Per-cutoff feature tables (Feast's offline sources)."""
        return self.home / "features"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and SQLite online store."""
        return self.home / "feast"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI in force."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifacts_dir(self) -> Path:
        """MLflow artifact root of the embedded default."""
        return self.home / "mlartifacts"

    @property
    def server_backend_store(self) -> str:
        """Backend store of the tracking server `clv tracking-server` starts."""
        return self.mlflow_backend_store or f"sqlite:///{self.home / 'mlflow-server.db'}"

    @property
    def served_artifacts_dir(self) -> Path:
        """Where the tracking server keeps the artifacts it serves to clients."""
        return self.home / "served-artifacts"

    @property
    def study_storage(self) -> str:
        """The Optuna storage URL in force."""
        return self.optuna_storage or f"sqlite:///{self.home / 'optuna.db'}"
