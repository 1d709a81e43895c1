"""The `clv` command line: one command per stage, composing the platform's layers."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from clv.settings import Settings

app = typer.Typer(
    help="Customer-lifetime-value and database-monetization platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("clv")

# Errors a user can cause: shown as one line and a non-zero exit, never a traceback.
USER_ERRORS = (ValueError, LookupError, FileExistsError, FileNotFoundError, PermissionError)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings object built by the top-level callback."""
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None, typer.Option(help="State folder (overrides CLV_HOME; default ./var).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Customer-lifetime-value and database-monetization platform."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    ctx.obj = Settings() if home is None else Settings(home=home)


@app.command()
def simulate(
    ctx: typer.Context,
    scale: Annotated[
        float | None, typer.Option(help="Entity-count multiplier (0.01 for tests, 10 at scale).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same bytes).")] = None,
    months: Annotated[int | None, typer.Option(help="Months of history (default 36).")] = None,
    force: Annotated[bool, typer.Option(help="Replace data already in $CLV_HOME/raw.")] = False,
    advance: Annotated[
        int, typer.Option(help="Extend the existing world by N months instead.", min=0)
    ] = 0,
) -> None:
    """Simulate the TechFlow database into $CLV_HOME/raw (ground truth into $CLV_HOME/truth)."""
    from simulator.io import advance_world, as_of, read_tables, write_world
    from simulator.summary import summarize
    from simulator.world import simulate as run_simulation

    settings = settings_of(ctx)
    started = time.perf_counter()
    if advance:
        if any(v is not None for v in (scale, seed, months)) or force:
            raise ValueError("--advance keeps the world's own seed, scale and months")
        manifest = advance_world(settings.raw_dir, settings.truth_dir, advance)
    else:
        scale = settings.scale if scale is None else scale
        months = settings.months if months is None else months
        if scale <= 0:
            raise ValueError(f"--scale must be positive, got {scale}")
        if months < 13:
            raise ValueError(f"--months must be at least 13, got {months}")
        from simulator.io import holds_data

        if holds_data(settings.raw_dir) and not force:
            raise FileExistsError(
                f"{settings.raw_dir} already holds data; pass --force to replace it"
            )
        world = run_simulation(
            months=months, scale=scale, seed=settings.seed if seed is None else seed
        )
        manifest = write_world(world, settings.raw_dir, settings.truth_dir, force=force)
    elapsed = time.perf_counter() - started
    typer.echo(f"wrote {settings.raw_dir} ({manifest.as_of}, {elapsed:.1f} s)")
    raw = read_tables(settings.raw_dir)
    _print_summary(summarize(raw, as_of(manifest.months)), manifest.scale)


def _print_summary(summary: object, scale: float) -> None:
    from simulator.summary import Summary, deviations

    assert isinstance(summary, Summary)
    typer.echo(f"TechFlow database as of {summary.as_of} (scale {scale:g})")
    typer.echo(f"  {'figure':26s} {'measured':>11s} {'target':>11s}  within tolerance")
    for name, (measured, target, _tol, ok) in deviations(summary, scale).items():
        fmt = "{:11.0f}" if measured > 100 else "{:11.3f}"
        typer.echo(
            f"  {name:26s} {fmt.format(measured)} {fmt.format(target)}  {'yes' if ok else 'NO'}"
        )


from clv.registry_cli import registry_app  # noqa: E402

app.add_typer(registry_app, name="registry")

features_app = typer.Typer(help="Feature store: build tables, register, materialize.")
app.add_typer(features_app, name="features")


@features_app.command("build")
def features_build(
    ctx: typer.Context,
    rebuild: Annotated[
        bool, typer.Option("--all", help="Recompute every cutoff, not only new ones.")
    ] = False,
) -> None:
    """Compute per-cutoff feature tables from $CLV_HOME/raw into $CLV_HOME/features."""
    from clv.compose import world_now
    from features.pipeline import build_features

    settings = settings_of(ctx)
    report = build_features(
        settings.raw_dir, settings.features_dir, rebuild=rebuild, now=world_now(settings)
    )
    typer.echo(report.describe())


@features_app.command("apply")
def features_apply(ctx: typer.Context) -> None:
    """Register entities, feature views and feature services (like `feast apply`)."""
    from clv.compose import store_config
    from features.store import apply, open_store

    settings = settings_of(ctx)
    names = apply(open_store(store_config(settings)), settings.features_dir)
    typer.echo(f"applied {len(names)} objects: {', '.join(names)}")


@features_app.command("materialize")
def features_materialize(
    ctx: typer.Context,
    full: Annotated[bool, typer.Option(help="Reload every cutoff, not only new ones.")] = False,
) -> None:
    """Load the latest feature rows into the online store (incremental by default)."""
    from clv.compose import store_config
    from features.store import built_cutoffs, materialize, open_store

    settings = settings_of(ctx)
    cutoffs = built_cutoffs(settings.features_dir)
    if not cutoffs:
        raise FileNotFoundError(
            f"no feature tables in {settings.features_dir}; run `clv features build` first"
        )
    store = open_store(store_config(settings))
    started = time.perf_counter()
    intervals = materialize(store, settings.features_dir, cutoffs[-1], full=full)
    typer.echo(
        f"materialized up to {cutoffs[-1].date()} in {time.perf_counter() - started:.1f} s: "
        + ", ".join(intervals)
    )


@features_app.command("env")
def features_env(ctx: typer.Context) -> None:
    """Print the exports that let the `feast` CLI in features/ use the current settings."""
    import shlex

    from clv.compose import store_config

    settings = settings_of(ctx)
    for name, value in store_config(settings).environment().items():
        typer.echo(f"export {name}={shlex.quote(value)}")
    typer.echo(f"export CLV_HOME={shlex.quote(str(settings.home))}")


@app.command("train")
def train_command(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name (churn, expansion, ...) or 'all'.")],
    trials: Annotated[
        int | None, typer.Option(help="Optuna trials per model (default CLV_TRIALS).", min=1)
    ] = None,
    specs: Annotated[
        Path | None, typer.Option(help="TOML file with extra model specs, one table per model.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Optuna worker processes on one study (CLV_TRAIN_WORKERS).", min=1),
    ] = None,
    join: Annotated[
        bool,
        typer.Option(
            help="Only add trials to the shared study (another machine trains and registers)."
        ),
    ] = False,
) -> None:
    """Tune, train, evaluate and register one model (or all) from the feature store."""
    from clv.workflows import train_models, training_table

    settings = settings_of(ctx)
    results = train_models(
        settings, model, trials=trials, spec_file=specs, workers=workers, join=join
    )
    if join:
        for r in results:
            typer.echo(f"{r.name}: {r.notes[0]}; best validation {r.metrics}")
        return
    typer.echo(training_table(results))


@app.command()
def serve(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="Port (default CLV_PORT, 3000).")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    workers: Annotated[int | None, typer.Option(help="Worker processes (CLV_WORKERS).")] = None,
) -> None:
    """Start the BentoML scoring service (blocks; Ctrl-C stops it)."""
    import os
    import shutil

    settings = settings_of(ctx)
    bentoml = shutil.which("bentoml") or str(Path(sys.executable).with_name("bentoml"))
    n = workers or settings.workers
    env = {
        **os.environ,
        "CLV_HOME": str(settings.home),
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_CONFIG_OPTIONS": f"services.clv_scoring.workers={n}",
    }
    command = [bentoml, "serve", "serving.service:Scoring", "--port", str(port or settings.port)]
    command += ["--host", host]
    typer.echo(f"serving on http://{host}:{port or settings.port} ({n} worker(s)); docs at /")
    os.execvpe(command[0], command, env)


@app.command()
def score(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Parquet file to write.")],
    every: Annotated[bool, typer.Option("--all", help="Score the whole customer base.")] = False,
    reasons: Annotated[bool, typer.Option(help="Include the top reason of each model.")] = False,
) -> None:
    """Score every active customer (and dormant contact) offline with the champions."""
    from clv.workflows import score_all

    if not every:
        raise ValueError("give --all (scoring a subset offline is done through the API)")
    settings = settings_of(ctx)
    report = score_all(settings, out, reasons=reasons)
    typer.echo(report)


@app.command()
def retrain(ctx: typer.Context) -> None:
    """The scheduled job: validate raw data, new features, drift, retrain, gate, summary."""
    from clv.retrain import RetrainError, run_retrain

    try:
        summary = run_retrain(settings_of(ctx), typer.echo)
    except RetrainError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(4) from exc
    for name, model in summary["models"].items():
        typer.echo(f"{name:13s} v{model['version']:>3s} {model['decision']}  {model['why']}")


@app.command("tracking-server")
def tracking_server(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="Port (default CLV_MLFLOW_PORT, 5000).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface (CLV_MLFLOW_HOST).")] = None,
) -> None:
    """Start an MLflow tracking server (blocks): backend store CLV_MLFLOW_BACKEND_STORE (e.g.
    PostgreSQL), artifacts served from $CLV_HOME/served-artifacts. Point clients at it with
    CLV_MLFLOW_TRACKING_URI=http://HOST:PORT."""
    import os

    from clv.servers import server_environment, tracking_server_command

    settings = settings_of(ctx)
    command, url = tracking_server_command(settings, host=host, port=port)
    typer.echo(f"MLflow tracking server on {url}; backend {settings.server_backend_store}")
    os.execvpe(command[0], command, server_environment())


@app.command()
def demo(ctx: typer.Context) -> None:
    """The main job: simulate, build features, train, promote, serve, score; then a summary."""
    from clv.workflows import run_demo

    run_demo(settings_of(ctx), typer.echo)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    try:
        app()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or exc.title
        typer.echo(f"error: setting {where}: {first['msg']}", err=True)
        sys.exit(2)
    except USER_ERRORS as exc:
        message = exc.args[0] if exc.args else repr(exc)
        typer.echo(f"error: {message}", err=True)
        sys.exit(1)
