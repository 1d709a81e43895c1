"""Model registry: the champion/challenger promotion gate, aliases, rollback and an audit trail.

    from registry import promote
    from registry.store import RegistryStore

    store = RegistryStore(settings.tracking_uri, settings.artifacts_dir)
    decision = promote(store, get_spec("churn"))  # the latest version, through the gate
    decision.promote, decision.reasons

`registry.gate.decide` is the pure decision; `registry.store.RegistryStore` is the only code
here that talks to MLflow; `registry.operations` composes the two.
"""

from registry.gate import Compatibility, Decision, Evaluation, decide
from registry.operations import (
    Assessment,
    Comparison,
    IncompatibleVersionError,
    ModelRow,
    assess,
    compare,
    history,
    overview,
    promote,
    rollback,
    stage,
)
from registry.records import AuditEntry, VersionInfo

__all__ = [
    "Assessment",
    "AuditEntry",
    "Comparison",
    "Compatibility",
    "Decision",
    "Evaluation",
    "IncompatibleVersionError",
    "ModelRow",
    "VersionInfo",
    "assess",
    "compare",
    "decide",
    "history",
    "overview",
    "promote",
    "rollback",
    "stage",
]
