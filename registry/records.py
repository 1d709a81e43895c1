"""Plain records of the registry (pure): a model version as the registry sees it, and one audit
entry per decision (flat strings for MLflow, a JSON line for people and tools)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

Action = Literal["promote", "refuse", "force", "stage", "rollback"]
ACTIONS: tuple[str, ...] = ("promote", "refuse", "force", "stage", "rollback")
# MLflow refuses longer parameter values (6000 in MLflow 3); keep well inside it.
MAX_VALUE = 5000


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version: its run, tags, aliases and registration time."""

    model: str
    version: str
    run_id: str
    source: str
    tags: dict[str, str]
    aliases: tuple[str, ...]
    created: datetime

    def metric(self, name: str) -> float:
        """A test metric recorded by the training job (`metric.<name>` tag), NaN if absent."""
        try:
            return float(self.tags.get(f"metric.{name}", "nan"))
        except ValueError:
            return float("nan")


@dataclass(frozen=True)
class AuditEntry:
    """One decision: what happened to which version, why, and the champion around it."""

    model: str
    version: str
    action: Action
    reasons: list[str] = field(default_factory=list)
    champion_before: str = ""  # "" = there was no champion
    champion_after: str = ""
    by: str = ""
    note: str = ""  # e.g. the operator's reason for a forced promotion
    at: str = field(default_factory=lambda: now_iso())

    def to_params(self) -> dict[str, str]:
        """Flat string values (MLflow params, which can never be changed once written)."""
        data = asdict(self)
        data["reasons"] = _clip("\n".join(self.reasons))
        data["note"] = _clip(self.note)
        return {key: str(value) for key, value in data.items()}

    @classmethod
    def from_params(cls, params: dict[str, str]) -> AuditEntry:
        action = params.get("action", "")
        if action not in ACTIONS:
            raise ValueError(f"audit record has an unknown action {action!r}")
        reasons = params.get("reasons", "")
        return cls(
            model=params["model"],
            version=params["version"],
            action=action,  # type: ignore[arg-type]
            reasons=reasons.split("\n") if reasons else [],
            champion_before=params.get("champion_before", ""),
            champion_after=params.get("champion_after", ""),
            by=params.get("by", ""),
            note=params.get("note", ""),
            at=params["at"],
        )

    def to_json(self) -> str:
        """The entry as one JSON line."""
        return json.dumps(asdict(self), sort_keys=True)


def now_iso() -> str:
    """UTC time with microseconds: sorts as text in time order."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"
