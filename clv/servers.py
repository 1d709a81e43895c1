"""Start and stop the servers of the scale path from the settings: an MLflow tracking server
with its backend store in a database (PostgreSQL at scale) and artifacts it serves itself, so
clients need only its URL."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from clv.settings import Settings

READY_SECONDS = 120.0


def server_environment() -> dict[str, str]:
    """The server's environment: no telemetry, and none of MLflow 3's job runner (seven huey
    worker processes for GenAI jobs this platform never submits) unless asked for."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def tracking_server_command(
    settings: Settings, host: str | None = None, port: int | None = None
) -> tuple[list[str], str]:
    """The `mlflow server` command line for the settings, and the URL clients use."""
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    host = host or settings.mlflow_host
    port = port or settings.mlflow_port
    settings.served_artifacts_dir.mkdir(parents=True, exist_ok=True)
    command = [
        mlflow, "server",
        "--backend-store-uri", settings.server_backend_store,
        "--serve-artifacts",
        "--artifacts-destination", settings.served_artifacts_dir.as_uri(),
        "--workers", "1",
        "--host", host,
        "--port", str(port),
    ]  # fmt: skip
    return command, f"http://{host}:{port}"


def wait_healthy(url: str, process: subprocess.Popen | None, seconds: float) -> None:
    """Block until `url`/health answers; fail early if the process died."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the tracking server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the tracking server at {url} did not become healthy in {seconds:.0f} s")


@contextlib.contextmanager
def tracking_server(
    settings: Settings, port: int | None = None, log_file: Path | None = None
) -> Iterator[str]:
    """Run a tracking server for the duration of the block; yields its URL."""
    command, url = tracking_server_command(settings, port=port)
    log = open(log_file or settings.home / "tracking-server.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=server_environment(),
        start_new_session=True,
    )
    try:
        wait_healthy(url, process, READY_SECONDS)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        log.close()
