"""`clv registry ...`: list, promote (or stage), roll back, compare, and read the audit trail.

Exit codes: 0 done; 1 bad input (unknown model or version, a version that cannot be served,
a forced promotion without a reason, nothing to roll back to), raised as LookupError or
ValueError and printed as one line by `clv.cli.main`; 3 the gate refused the candidate (its
reasons on stdout, a one-line summary on stderr; the refusal is recorded, the champion stays).
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clv.settings import Settings
from training.specs import SPECS, ModelSpec, get_spec, load_specs

if TYPE_CHECKING:  # the registry (sklearn, mlflow) loads only when a command runs
    from registry.gate import Decision
    from registry.store import RegistryStore

REFUSED = 3  # exit code of a refusal by the gate (1 is bad input, 2 a usage error)

registry_app = typer.Typer(
    help="Model registry: promotion gate, champion/challenger aliases, rollback, audit trail.",
    no_args_is_help=True,
)

ModelArg = Annotated[str, typer.Argument(help="Model name (churn, expansion, ...).")]
SpecsOption = Annotated[
    Path | None, typer.Option(help="TOML file with extra model specs (models.NAME tables).")
]
ByOption = Annotated[
    str | None, typer.Option(help="Who decides (recorded in the audit trail; default: login).")
]


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    if not isinstance(settings, Settings):
        raise TypeError("the registry commands need the platform Settings as ctx.obj")
    return settings


def _store(ctx: typer.Context) -> RegistryStore:
    from registry.store import RegistryStore

    settings = _settings(ctx)
    return RegistryStore(settings.tracking_uri, settings.artifacts_dir)


def _spec(model: str, spec_file: Path | None) -> ModelSpec:
    return get_spec(model, load_specs(spec_file) if spec_file else dict(SPECS))


def _operator(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container without passwd entry)
        return ""


def age(since: datetime, now: datetime | None = None) -> str:
    """'3d 4h', '5h 12m' or '42m' since a moment."""
    delta = (now or datetime.now(UTC)) - since
    delta = max(delta, timedelta(0))
    days, hours, minutes = delta.days, delta.seconds // 3600, delta.seconds // 60 % 60
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


def _num(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"


@registry_app.command("list")
def list_command(ctx: typer.Context, specs: SpecsOption = None) -> None:
    """Champion of every registered model: metric, gap to the oracle, age, challenger."""
    from registry.operations import overview

    store = _store(ctx)
    rows = overview(store, load_specs(specs) if specs else dict(SPECS))
    if not rows:
        typer.echo(f"no registered models in {store.tracking_uri}; train one with `clv train`")
        return
    typer.echo(
        f"{'model':13s} {'champion':>8s} {'metric':>8s} {'value':>10s} {'oracle gap':>10s}"
        f" {'age':>8s}  {'feature service':16s} {'challenger':>10s} {'previous':>8s}"
        f" {'versions':>8s}"
    )
    for row in rows:
        champion = f"v{row.champion.version}" if row.champion else "-"
        since = age(row.champion.created) if row.champion else "-"
        typer.echo(
            f"{row.model:13s} {champion:>8s} {row.primary_metric:>8s} {_num(row.primary):>10s}"
            f" {_num(row.oracle_gap):>10s} {since:>8s}  {row.feature_service:16s}"
            f" {('v' + row.challenger) if row.challenger else '-':>10s}"
            f" {('v' + row.previous) if row.previous else '-':>8s} {row.versions:8d}"
        )


@registry_app.command("promote")
def promote_command(
    ctx: typer.Context,
    model: ModelArg,
    version: Annotated[
        str | None, typer.Option("--version", help="Version to promote (default: the latest).")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Promote even if the gate refuses (needs --reason).")
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why a forced promotion is right (recorded).")
    ] = None,
    stage: Annotated[
        bool, typer.Option("--stage", help="Set the `challenger` alias instead of promoting.")
    ] = False,
    by: ByOption = None,
    specs: SpecsOption = None,
) -> None:
    """Run the promotion gate on a version and make it the champion if it passes.

    The champion is re-scored on the candidate's test rows. Exit code 3 when the gate refuses.
    """
    from registry.operations import promote
    from registry.operations import stage as stage_version

    spec = _spec(model, specs)
    if stage and force:
        raise ValueError(f"model {model}: --stage and --force do not combine")
    if reason is not None and not force:
        raise ValueError(f"model {model}: --reason goes with --force")
    store = _store(ctx)
    before = store.aliases(spec.name).get("champion", "")
    who = _operator(by)
    if stage:
        decision = stage_version(store, spec, version, by=who)
        staged = store.aliases(spec.name).get("challenger", "?")
        _print_decision(decision)
        typer.echo(f"{model} version {staged} is now the challenger (champion unchanged)")
        return
    decision = promote(store, spec, version, force=force, reason=reason, by=who)
    _print_decision(decision)
    after = store.aliases(spec.name).get("champion", "")
    if not decision.promote:
        typer.echo(decision.summary(model), err=True)
        raise typer.Exit(REFUSED)
    typer.echo(
        f"{model}: champion {('v' + before) if before else '(none)'} -> v{after}"
        + (f", previous v{before}" if before else "")
        + (" (forced)" if decision.forced else "")
    )


def _print_decision(decision: Decision) -> None:
    typer.echo("gate:")
    for line in decision.reasons:
        typer.echo(f"  {line}")


@registry_app.command("rollback")
def rollback_command(
    ctx: typer.Context,
    model: ModelArg,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail).")] = "",
    by: ByOption = None,
) -> None:
    """Make the previous champion the champion again (recorded in the audit trail)."""
    from registry.operations import rollback

    entry = rollback(_store(ctx), model, by=_operator(by), reason=reason)
    before = f"v{entry.champion_before}" if entry.champion_before else "(none)"
    typer.echo(f"{model}: champion {before} -> v{entry.champion_after} (rolled back)")


@registry_app.command("compare")
def compare_command(
    ctx: typer.Context,
    model: ModelArg,
    first: Annotated[str, typer.Argument(metavar="V1", help="First version.")],
    second: Annotated[str, typer.Argument(metavar="V2", help="Second version.")],
    rows: Annotated[
        str | None, typer.Option(help="Whose test rows to score both on (default: V2's).")
    ] = None,
    specs: SpecsOption = None,
) -> None:
    """Metrics of two versions side by side, both scored on the same test rows."""
    from registry.operations import compare

    spec = _spec(model, specs)
    result = compare(_store(ctx), spec, [first, second], rows_of=rows)
    a, b = result.metrics[first], result.metrics[second]
    typer.echo(
        f"{model}: v{first} vs v{second} on the {result.rows:,} test rows of v{result.rows_of}"
    )
    typer.echo(f"  {'metric':24s} {'v' + first:>12s} {'v' + second:>12s} {'difference':>12s}")
    for name in a:
        if name == "rows":
            continue
        typer.echo(
            f"  {name:24s} {_num(a[name]):>12s} {_num(b.get(name, float('nan'))):>12s}"
            f" {_num(b.get(name, float('nan')) - a[name]):>12s}"
        )


@registry_app.command("history")
def history_command(
    ctx: typer.Context,
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The audit trail of a model: every promotion, refusal, forced promotion and rollback."""
    from registry.operations import history

    entries = history(_store(ctx), model)
    if as_json:
        for entry in entries:
            typer.echo(entry.to_json())
        return
    if not entries:
        typer.echo(f"{model}: no registry decisions recorded yet")
        return
    for entry in entries:
        before = f"v{entry.champion_before}" if entry.champion_before else "-"
        after = f"v{entry.champion_after}" if entry.champion_after else "-"
        who = f" by {entry.by}" if entry.by else ""
        typer.echo(
            f"{entry.at[:19]}  {entry.action:8s} v{entry.version:<4s} champion {before} -> {after}"
            f"{who}" + (f": {entry.note}" if entry.note else "")
        )
        for line in entry.reasons:
            typer.echo(f"    {line}")
