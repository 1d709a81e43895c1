"""Serving benchmark: the real `clv serve` against the framework's floor and against the chain a
user would otherwise assemble (Feast's feature server, then `mlflow models serve`), plus
batch scoring.

Targets (from the issue), all at the default size on one machine:

1. cold start, launching `clv serve` to the first 200 on /readyz, within 15 s (two runs);
2. POST /score at concurrency 8 (closed loop) reaching 80% of the throughput of POST /ping,
   the trivial route of the same service, with p99 within 1.5x its p99;
3. POST /score_batch of 1,000 ids with p99 within 100 ms;
4. /score at 5x the throughput of the Feast-then-MLflow chain, with a lower p99;
5. scoring every active customer with the four customer champions at 100,000 customers/s
   (`serving.scoring.score_matrix` in process); `clv score --all` is timed as a whole.

The home is BENCH_HOME (or CLV_HOME) when set, used read-only (no promotion, no write); when
neither is set a fresh home is built through the CLI in a temporary folder (simulate, features
build/apply/materialize, `train all --trials 3`, forced promotion of every model) and removed
afterwards. Load generators run in their own processes: an asyncio + httpx one, always, and
`wrk` when it is on PATH (`apt-get install -y wrk`). With two cores the generator competes
with the server, so its own ceiling is measured against a minimal asyncio HTTP stub, and
both processes' CPU use is reported. Every server is started in its own session on
127.0.0.1 and its whole process group is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, run_callable, run_command, table

SEED = 42
BIN = REPO / ".venv" / "bin"
CLV = BIN / "clv"
FEAST = BIN / "feast"
MLFLOW = BIN / "mlflow"
FEAST_REPO = REPO / "features"
HOST = "127.0.0.1"
TELEMETRY = {
    "FEAST_USAGE": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "True",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "DO_NOT_TRACK": "1",
}
HOME_VARIABLES = ("BENCH_HOME", "CLV_HOME")
TRAIN_TRIALS = 3

KEY = "customer_id"
DIRECTORY = Path("features") / "customer_directory" / "directory.parquet"
CUSTOMER_MODELS = ("churn", "expansion", "referral", "clv")
CHAIN_MODEL = "churn"
CHAIN_SERVICE = "churn_v1"

COLD_STARTS, QUICK_COLD_STARTS = 2, 1
COLD_START_TARGET_SECONDS = 15.0
READY_LIMIT_SECONDS = 180.0  # clv serve
CHAIN_READY_LIMIT_SECONDS = 90.0  # feast serve, mlflow models serve
SNAPSHOT_LIMIT_SECONDS = 180.0
POLL_SECONDS = 0.05

CONCURRENCY = 8
WARMUP_SECONDS, QUICK_WARMUP_SECONDS = 3.0, 2.0
LOAD_SECONDS, QUICK_LOAD_SECONDS = 15.0, 5.0
THROUGHPUT_FLOOR_SHARE = 0.80  # /score req/s >= 80% of /ping's
P99_FLOOR_FACTOR = 1.5  # /score p99 <= 1.5x /ping's
CHAIN_THROUGHPUT_FACTOR = 5.0  # /score req/s >= 5x the chain's

BATCH_IDS = 1000
BATCH_CALLS, QUICK_BATCH_CALLS = 20, 5
BATCH_WARMUP_CALLS = 2
BATCH_P99_TARGET_MS = 100.0

SCORES_OUT = Path("/tmp/scores.parquet")
SCORING_REPEATS, QUICK_SCORING_REPEATS = 3, 1
SCORING_TARGET_PER_SECOND = 100_000.0
ENGINE_CALLS = 2000


# ---- processes ------------------------------------------------------------------------------
def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a server or CLI call: the home, its MLflow store, telemetry off, and
    .venv/bin first on PATH as in an activated venv (`mlflow models serve` execs `uvicorn`)."""
    env = {k: v for k, v in os.environ.items() if k != "CLV_API_KEY"}
    env.update(TELEMETRY)
    env["CLV_HOME"] = str(home)
    env["MLFLOW_TRACKING_URI"] = tracking_uri(home)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def tracking_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


@dataclass
class Server:
    """A server started in its own session, so that stopping it stops every process it
    forked (BentoML's arbiter and workers, uvicorn's workers)."""

    name: str
    argv: list[str]
    log: Path
    cwd: Path = REPO
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def tail(self, lines: int = 12) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 20 s."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                # Children outlive the leader for a moment; make sure the group is gone.
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
            break
        self.proc.wait()
        self.proc = None


class ServerFailed(RuntimeError):
    """A server exited or did not answer in time; the message carries its log tail."""


def wait_for(server: Server, url: str, limit: float) -> float:
    """Seconds from the server's launch to the first 200 from GET `url`."""
    import httpx

    with httpx.Client(timeout=2.0) as client:
        while True:
            if server.exited():
                raise ServerFailed(f"{server.name} exited during start-up:\n{server.tail()}")
            try:
                if client.get(url).status_code == 200:
                    return time.perf_counter() - server.started
            except httpx.HTTPError:
                pass
            if time.perf_counter() - server.started > limit:
                raise ServerFailed(
                    f"{server.name} gave no 200 on {url} within {limit:g} s:\n{server.tail()}"
                )
            time.sleep(POLL_SECONDS)


def wait_for_snapshot(server: Server, base: str, limit: float) -> float:
    """Seconds from launch until /models reports the precomputed snapshot (before it, /score
    goes through the online store)."""
    import httpx

    with httpx.Client(timeout=5.0) as client:
        while True:
            if server.exited():
                raise ServerFailed(f"{server.name} exited:\n{server.tail()}")
            try:
                response = client.get(f"{base}/models")
                if response.status_code == 200 and response.json().get("snapshot_built_at"):
                    return time.perf_counter() - server.started
            except (httpx.HTTPError, ValueError):
                pass
            if time.perf_counter() - server.started > limit:
                raise ServerFailed(f"{server.name}: no snapshot within {limit:g} s")
            time.sleep(POLL_SECONDS * 4)


# ---- the home -------------------------------------------------------------------------------
def given_home() -> tuple[Path, str] | None:
    """The home named by BENCH_HOME or CLV_HOME, and which variable named it."""
    for variable in HOME_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value:
            return Path(value).expanduser().resolve(), variable
    return None


def check_home(home: Path) -> None:
    """Raise if `home` lacks what serving needs (a world, built and materialized features and
    an MLflow store)."""
    needed = [home / "mlflow.db", home / "feast" / "online.db", home / DIRECTORY]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"home {home} is not trained and materialized; missing {', '.join(missing)}"
        )


def _cli(home: Path, *args: str) -> list[str]:
    # `env` execs clv in the same process, so run_command's wait4 measures clv itself.
    variables = {**TELEMETRY, "CLV_HOME": str(home), "MLFLOW_TRACKING_URI": tracking_uri(home)}
    return ["env", *(f"{k}={v}" for k, v in variables.items()), str(CLV), *args]


def build_home(home: Path) -> list[dict[str, Any]]:
    """Simulate, build and materialize features, train every model and force each to
    champion, through the CLI; raises at the first failing step."""
    from training.specs import SPECS

    steps = [
        ["simulate"],
        ["features", "build"],
        ["features", "apply"],
        ["features", "materialize"],
        ["train", "all", "--trials", str(TRAIN_TRIALS)],
        *(["registry", "promote", name, "--force", "--reason", "bench"] for name in SPECS),
    ]
    done = []
    for argv in steps:
        command = f"clv {' '.join(argv)}"
        print(f"home: {command} ...", flush=True)
        run = run_command(_cli(home, *argv))
        print(f"  {run.seconds:.1f} s", flush=True)
        done.append({"command": command, "seconds": run.seconds, "peak_rss_mb": run.peak_rss_mb})
    return done


def active_ids(home: Path) -> list[str]:
    """Active customers of the latest build (directory status 1), in a seeded random order."""
    import pandas as pd

    directory = pd.read_parquet(home / DIRECTORY, columns=[KEY, "customer_status"])
    ids = directory.loc[directory["customer_status"] == 1, KEY].astype(str).tolist()
    random.Random(SEED).shuffle(ids)
    return ids


# ---- load generator (child process) ---------------------------------------------------------
def _summary(latencies: Sequence[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    ms = np.asarray(latencies) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
    }


def _tree_cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of processes and all their descendants."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def load(
    kind: str,
    targets: dict[str, str],
    ids_file: str,
    concurrency: int = CONCURRENCY,
    warmup_seconds: float = WARMUP_SECONDS,
    seconds: float = LOAD_SECONDS,
    server_pids: Sequence[int] = (),
    seed: int = SEED,
) -> dict[str, Any]:
    """Child: a closed loop of `concurrency` asyncio workers sharing one httpx pool per target.

    `kind` is "score" (POST /score), "ping" (POST /ping, or the stub), "feast" (one online
    lookup), "mlflow" (one /invocations of a fixed row) or "chain" (the lookup, then the
    model with its answer). Requests completing within the `seconds` after the warm-up count;
    the generator's own CPU and the servers' (`server_pids` and their children) are measured
    over the same window.
    """
    import asyncio

    import httpx

    ids = json.loads(Path(ids_file).read_text())
    json_headers = {"content-type": "application/json"}

    def encoded(value: Any) -> bytes:
        return json.dumps(value).encode()

    async def main() -> dict[str, Any]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        clients = {
            name: httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0)
            for name, base in targets.items()
        }
        fixed_row: bytes | None = None
        if kind == "mlflow":
            fixed_row = await _model_body(clients["feast"], ids[0])

        async def feast_lookup(identifier: str) -> tuple[bool, str, bytes]:
            body = {"feature_service": CHAIN_SERVICE, "entities": {KEY: [identifier]}}
            response = await clients["feast"].post(
                "/get-online-features", content=encoded(body), headers=json_headers
            )
            if response.status_code != 200:
                return False, f"feast {response.status_code}: {response.text[:200]}", b""
            return True, "", _split_body(response.json())

        async def invoke(body: bytes) -> tuple[bool, str]:
            response = await clients["mlflow"].post(
                "/invocations", content=body, headers=json_headers
            )
            if response.status_code != 200:
                return False, f"mlflow {response.status_code}: {response.text[:200]}"
            return True, ""

        async def call(rng: random.Random) -> tuple[bool, str]:
            identifier = ids[rng.randrange(len(ids))]
            if kind == "score":
                response = await clients["service"].post(
                    "/score", content=encoded({KEY: identifier}), headers=json_headers
                )
                ok = response.status_code == 200 and b'"churn"' in response.content
                return ok, "" if ok else f"{response.status_code}: {response.text[:200]}"
            if kind == "ping":
                response = await clients["service"].post("/ping", content=b"{}", headers=json_headers)
                ok = response.status_code == 200 and response.text == "pong"
                return ok, "" if ok else f"{response.status_code}: {response.text[:200]}"
            if kind == "feast":
                ok, detail, _ = await feast_lookup(identifier)
                return ok, detail
            if kind == "mlflow":
                assert fixed_row is not None
                return await invoke(fixed_row)
            ok, detail, body = await feast_lookup(identifier)
            return await invoke(body) if ok else (ok, detail)

        begin = time.perf_counter()
        window_start = begin + warmup_seconds
        window_end = window_start + seconds
        latencies: list[float] = []
        errors: list[str] = []
        usage: dict[str, float] = {}

        async def worker(number: int) -> None:
            rng = random.Random(seed * 1000 + number)
            while (started := time.perf_counter()) < window_end:
                try:
                    ok, detail = await call(rng)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    ok, detail = False, repr(exc)
                finished = time.perf_counter()
                if window_start <= finished <= window_end:
                    if ok:
                        latencies.append(finished - started)
                    else:
                        errors.append(detail)

        async def meter() -> None:
            await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
            usage["gen0"], usage["srv0"] = time.process_time(), _tree_cpu_seconds(server_pids)
            await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
            usage["gen1"], usage["srv1"] = time.process_time(), _tree_cpu_seconds(server_pids)

        try:
            await asyncio.gather(meter(), *(worker(n) for n in range(concurrency)))
        finally:
            for client in clients.values():
                await client.aclose()
        done = len(latencies) + len(errors)
        return {
            "kind": kind,
            "concurrency": concurrency,
            "seconds": seconds,
            "requests": done,
            "errors": len(errors),
            "error_examples": sorted(set(errors))[:3],
            "throughput_rps": len(latencies) / seconds,
            **_summary(latencies),
            "generator_cpu_share": (usage["gen1"] - usage["gen0"]) / seconds,
            "server_cpu_share": (usage["srv1"] - usage["srv0"]) / seconds if server_pids else None,
        }

    return asyncio.run(main())


def _split_body(feast_response: dict[str, Any]) -> bytes:
    """The /invocations body (pandas split orientation) of one Feast online response."""
    names = feast_response["metadata"]["feature_names"]
    values = [result["values"][0] for result in feast_response["results"]]
    columns, row = zip(
        *((n, v) for n, v in zip(names, values, strict=True) if n != KEY), strict=True
    )
    return json.dumps({"dataframe_split": {"columns": list(columns), "data": [list(row)]}}).encode()


async def _model_body(feast: Any, identifier: str) -> bytes:
    body = {"feature_service": CHAIN_SERVICE, "entities": {KEY: [identifier]}}
    response = await feast.post("/get-online-features", json=body)
    response.raise_for_status()
    return _split_body(response.json())


def stub_server(port: int) -> None:
    """Child: the cheapest HTTP/1.1 keep-alive server asyncio allows, answering "pong" to any
    request, to find the load generator's own ceiling."""
    import asyncio

    reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\npong"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ---- wrk ------------------------------------------------------------------------------------
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"mean_us":%f,'
    .. '"max_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_script(path: Path, kind: str, ids: list[str]) -> Path:
    """A Lua script: POST /ping with {} or POST /score cycling through `ids`."""
    if kind == "ping":
        body = (
            'wrk.method = "POST"\nwrk.body = "{}"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    else:
        quoted = ",".join(json.dumps(i) for i in ids)
        body = (
            f"local ids = {{{quoted}}}\nlocal n = 0\n"
            "request = function()\n  n = n + 1\n"
            "  local body = '{\"customer_id\":\"' .. ids[(n % #ids) + 1] .. '\"}'\n"
            '  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)\n'
            "end\n"
        )
    path.write_text(body + WRK_DONE)
    return path


def run_wrk(
    wrk: str, url: str, script: Path, warmup: float, seconds: float, server_pid: int
) -> dict[str, Any]:
    """A warm-up run of wrk, then the measured one (-t1 -c8); the server's CPU over it."""

    def once(duration: float) -> subprocess.CompletedProcess[str]:
        argv = [wrk, "-t1", f"-c{CONCURRENCY}", f"-d{duration:g}s", "--timeout", "10s"]
        return subprocess.run(
            [*argv, "-s", str(script), url], capture_output=True, text=True, timeout=duration + 60
        )

    once(warmup)
    cpu0 = _tree_cpu_seconds([server_pid])
    done = once(seconds)
    cpu1 = _tree_cpu_seconds([server_pid])
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-400:]}")
    raw = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    duration = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "errors": errors,
        "error_kinds": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
        "throughput_rps": (raw["requests"] - raw["status"]) / duration,
        "p50_ms": raw["p50_us"] / 1000.0,
        "p99_ms": raw["p99_us"] / 1000.0,
        "mean_ms": raw["mean_us"] / 1000.0,
        "max_ms": raw["max_us"] / 1000.0,
        "generator_cpu_share": None,
        "server_cpu_share": (cpu1 - cpu0) / duration,
    }


# ---- /score_batch (child process) -----------------------------------------------------------
def batch_latency(
    base: str,
    ids_file: str,
    size: int = BATCH_IDS,
    calls: int = BATCH_CALLS,
    warmup: int = BATCH_WARMUP_CALLS,
    seed: int = SEED,
) -> dict[str, Any]:
    """Child: sequential POST /score_batch calls of `size` different active ids each."""
    import httpx

    ids = json.loads(Path(ids_file).read_text())
    rng = random.Random(seed)
    latencies, errors, response_bytes = [], [], 0
    with httpx.Client(base_url=base, timeout=60.0) as client:
        for n in range(warmup + calls):
            body = json.dumps({"customer_ids": rng.sample(ids, size)}).encode()
            started = time.perf_counter()
            response = client.post(
                "/score_batch", content=body, headers={"content-type": "application/json"}
            )
            seconds = time.perf_counter() - started
            ok = response.status_code == 200 and len(response.json()) == size
            if n < warmup:
                continue
            if ok:
                latencies.append(seconds)
                response_bytes = len(response.content)
            else:
                errors.append(f"{response.status_code}: {response.text[:200]}")
    return {
        "ids_per_call": size,
        "calls": calls,
        "errors": len(errors),
        "error_examples": errors[:3],
        "response_bytes": response_bytes,
        **_summary(latencies),
    }


# ---- in-process scoring (child processes) ---------------------------------------------------
def _child_setup(home: str) -> Any:
    """This child's own environment (before MLflow and Feast load) and the home's settings."""
    os.environ.update(TELEMETRY)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri(Path(home))
    from clv.settings import Settings

    return Settings(home=Path(home))


def scoring_throughput(home: str, repeats: int = SCORING_REPEATS) -> dict[str, Any]:
    """Child: `score_matrix` of each customer champion on the full active-customer matrix (as
    the engine's snapshot builds it), with and without reasons; seconds are the median of
    `repeats` after one warm-up pass."""
    settings = _child_setup(home)
    import pandas as pd

    from clv.compose import store_config
    from features.store import historical_frame, latest_directory, online_refs, open_store
    from serving.champions import Registry
    from serving.scoring import score_matrix

    started = time.perf_counter()
    registry = Registry(settings.tracking_uri)
    versions = registry.champion_versions(list(CUSTOMER_MODELS))
    champions = [registry.load(name, v) for name, v in versions.items() if v is not None]
    load_seconds = time.perf_counter() - started
    if not champions:
        raise LookupError(f"no customer model has a champion in {settings.tracking_uri}")

    store = open_store(store_config(settings))
    customers = latest_directory(settings.features_dir)["customer_directory"]
    as_of = pd.Timestamp(customers["event_timestamp"].iloc[0]).tz_convert(None)
    active = customers.loc[customers["customer_status"] == 1, KEY].tolist()
    refs = online_refs(store, sorted({m.feature_service for m in champions}))
    entity = pd.DataFrame({KEY: active}).assign(event_timestamp=as_of)
    started = time.perf_counter()
    _, frame = historical_frame(store, refs, entity, "bench")
    frame_seconds = time.perf_counter() - started
    matrices = {m.name: frame[m.features].to_numpy(np.float64) for m in champions}

    variants = {}
    for reasons in (True, False):
        per_model: dict[str, list[float]] = {m.name: [] for m in champions}
        for attempt in range(repeats + 1):
            for m in champions:
                began = time.perf_counter()
                score_matrix(m.scorer, matrices[m.name], reasons=reasons)
                if attempt:  # the first pass warms XGBoost's predictor up
                    per_model[m.name].append(time.perf_counter() - began)
        medians = {name: statistics.median(s) for name, s in per_model.items()}
        total = sum(medians.values())
        variants["with reasons" if reasons else "without reasons"] = {
            "per_model_seconds": medians,
            "seconds": total,
            "customers_per_second": len(active) / total,
        }
    return {
        "rows": len(active),
        "models": {m.name: {"version": m.version, "features": len(m.features)} for m in champions},
        "champion_load_seconds": load_seconds,
        "historical_frame_seconds": frame_seconds,
        "repeats": repeats,
        "variants": variants,
    }


def engine_latency(home: str, ids_file: str, calls: int = ENGINE_CALLS) -> dict[str, Any]:
    """Child: the engine's own cost of one /score (no HTTP), from a built snapshot: the lookup
    and response dicts, then the pydantic model and its JSON, per call."""
    settings = _child_setup(home)
    from clv.compose import engine_config
    from serving.api import CustomerScores
    from serving.engine import Engine

    ids = json.loads(Path(ids_file).read_text())
    engine = Engine(engine_config(settings))
    started = time.perf_counter()
    engine.refresh()
    refresh_seconds = time.perf_counter() - started
    if not engine.ready:
        raise LookupError(f"engine not ready: {engine.not_ready_reason}")
    engine_s, model_s, json_s = [], [], []
    for n in range(calls + 100):
        identifier = ids[n % len(ids)]
        t0 = time.perf_counter()
        result = engine.score_customers([identifier])[0]
        t1 = time.perf_counter()
        scores = CustomerScores(**result)
        t2 = time.perf_counter()
        scores.model_dump_json()
        t3 = time.perf_counter()
        if n >= 100:
            engine_s.append(t1 - t0)
            model_s.append(t2 - t1)
            json_s.append(t3 - t2)
    return {
        "refresh_seconds": refresh_seconds,
        "calls": calls,
        "score_customers": _summary(engine_s),
        "pydantic_model": _summary(model_s),
        "model_dump_json": _summary(json_s),
    }


# ---- the parts ------------------------------------------------------------------------------
def _child(label: str, function: Any, **kwargs: Any) -> dict[str, Any]:
    """A child measurement; a failure is recorded (with its traceback tail), not raised."""
    print(f"{label} ...", flush=True)
    try:
        result = run_callable(function, **kwargs).result
    except RuntimeError as exc:
        print(f"  FAILED: {exc}", flush=True)
        return {"error": str(exc)}
    if "throughput_rps" in result:
        print(
            f"  {result['throughput_rps']:.0f} req/s, p99 {result['p99_ms'] or 0:.1f} ms, "
            f"{result['errors']} errors",
            flush=True,
        )
    return result


def clv_server(home: Path, logs: Path, label: str) -> tuple[Server, str]:
    port = free_port()
    argv = [str(CLV), "serve", "--port", str(port)]
    server = Server(f"clv serve ({label})", argv, logs / f"clv-serve-{label}.log")
    server.env = server_env(home)
    return server, f"http://{HOST}:{port}"


def cold_start(home: Path, logs: Path, label: str, servers: list[Server]) -> dict[str, Any]:
    """Launch `clv serve`, time /livez, /readyz and the snapshot; leave it running."""
    server, base = clv_server(home, logs, label)
    servers.append(server)
    print(f"cold start {label}: {' '.join(server.argv)} ...", flush=True)
    server.start()
    try:
        livez = wait_for(server, f"{base}/livez", READY_LIMIT_SECONDS)
        readyz = wait_for(server, f"{base}/readyz", READY_LIMIT_SECONDS)
        snapshot = wait_for_snapshot(server, base, SNAPSHOT_LIMIT_SECONDS)
    except ServerFailed as exc:
        print(f"  FAILED: {exc}", flush=True)
        return {"error": str(exc), "base": base}
    print(f"  /livez {livez:.1f} s, /readyz {readyz:.1f} s, snapshot {snapshot:.1f} s", flush=True)
    return {"base": base, "livez_s": livez, "readyz_s": readyz, "snapshot_s": snapshot}


def chain_servers(
    home: Path, logs: Path, servers: list[Server]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Start `feast serve` and `mlflow models serve` side by side; their bases and start-up
    records (seconds to ready, or the failure with its log tail)."""
    exports = subprocess.run(
        [str(CLV), "features", "env"],
        env=server_env(home),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    feast_env: dict[str, str] = {}
    for line in exports.splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export":
            name, _, value = parts[1].partition("=")
            feast_env[name] = value
    feast_port, mlflow_port = free_port(), free_port()
    feast = Server(
        "feast serve",
        [str(FEAST), "serve", "-h", HOST, "-p", str(feast_port)],
        logs / "feast-serve.log",
        cwd=FEAST_REPO,
        env=server_env(home, feast_env),
    )
    model_uri = f"models:/{CHAIN_MODEL}@champion"
    mlflow = Server(
        "mlflow models serve",
        [str(MLFLOW), "models", "serve", "-m", model_uri, "--env-manager", "local"]
        + ["-h", HOST, "-p", str(mlflow_port)],
        logs / "mlflow-serve.log",
        env=server_env(home),
    )
    bases = {"feast": f"http://{HOST}:{feast_port}", "mlflow": f"http://{HOST}:{mlflow_port}"}
    health = {"feast": f"{bases['feast']}/health", "mlflow": f"{bases['mlflow']}/ping"}
    records: dict[str, Any] = {}
    for name, server in (("feast", feast), ("mlflow", mlflow)):
        servers.append(server)
        print(f"chain: {' '.join(server.argv)} ...", flush=True)
        server.start()
    for name, server in (("feast", feast), ("mlflow", mlflow)):
        try:
            records[name] = {"ready_s": wait_for(server, health[name], CHAIN_READY_LIMIT_SECONDS)}
            print(f"  {server.name} ready in {records[name]['ready_s']:.1f} s", flush=True)
        except ServerFailed as exc:
            records[name] = {"error": str(exc)}
            print(f"  FAILED: {exc}", flush=True)
        records[name]["pid"] = server.proc.pid if server.proc else None
        records[name]["command"] = " ".join(server.argv)
    return bases, records


def _load_args(args: argparse.Namespace) -> dict[str, float]:
    quick = args.quick
    return {
        "warmup_seconds": QUICK_WARMUP_SECONDS if quick else WARMUP_SECONDS,
        "seconds": QUICK_LOAD_SECONDS if quick else LOAD_SECONDS,
    }


def measure(home: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every part against `home`; servers started here are stopped before returning."""
    ids = active_ids(home)
    ids_file = work / "active_ids.json"
    ids_file.write_text(json.dumps(ids))
    logs = work / "logs"
    logs.mkdir()
    timing = _load_args(args)
    servers: list[Server] = []
    out: dict[str, Any] = {"active_customers": len(ids), "load": {}}
    try:
        # 1. cold starts; the last server stays up for parts 2 and 3.
        runs = []
        for n in range(QUICK_COLD_STARTS if args.quick else COLD_STARTS):
            if runs and servers:
                servers[-1].stop()
            runs.append(cold_start(home, logs, f"run{n + 1}", servers))
        out["cold_starts"] = runs
        service = servers[-1]
        base = runs[-1]["base"]
        if "error" in runs[-1]:
            out["load"]["service"] = {"error": runs[-1]["error"]}
        else:
            assert service.proc is not None
            pid = service.proc.pid
            targets = {"service": base}
            common = {"ids_file": str(ids_file), "server_pids": [pid], **timing}
            # 2. the generator's ceiling, then the floor and /score, with the same generator.
            stub = Server(
                "stub",
                [sys.executable, "-c", f"from bench.bench_serving import stub_server; "
                 f"stub_server({(stub_port := free_port())})"],  # fmt: skip
                logs / "stub.log",
                env=server_env(home),
            )
            servers.append(stub)
            stub.start()
            try:
                wait_for(stub, f"http://{HOST}:{stub_port}/ping", 30.0)
                out["load"]["python stub"] = _child(
                    "python generator -> asyncio stub (generator ceiling)",
                    load,
                    kind="ping",
                    targets={"service": f"http://{HOST}:{stub_port}"},
                    **{**common, "server_pids": [stub.proc.pid] if stub.proc else []},
                )
            except ServerFailed as exc:
                out["load"]["python stub"] = {"error": str(exc)}
            finally:
                stub.stop()
            for kind in ("ping", "score"):
                out["load"][f"python {kind}"] = _child(
                    f"python generator -> POST /{kind}", load, kind=kind, targets=targets, **common
                )
            wrk = shutil.which("wrk")
            for kind in ("ping", "score"):
                if wrk is None:
                    out["load"][f"wrk {kind}"] = {"skipped": "wrk is not on PATH"}
                    continue
                print(f"wrk -t1 -c{CONCURRENCY} -> POST /{kind} ...", flush=True)
                script = wrk_script(work / f"{kind}.lua", kind, ids)
                try:
                    result = run_wrk(
                        wrk, f"{base}/{kind}", script, timing["warmup_seconds"],
                        timing["seconds"], pid,
                    )  # fmt: skip
                    print(f"  {result['throughput_rps']:.0f} req/s", flush=True)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    result = {"error": str(exc)}
                out["load"][f"wrk {kind}"] = result
            # 3. /score_batch
            out["batch"] = _child(
                f"POST /score_batch of {BATCH_IDS:,} ids",
                batch_latency,
                base=base,
                ids_file=str(ids_file),
                calls=QUICK_BATCH_CALLS if args.quick else BATCH_CALLS,
            )
        service.stop()  # the chain must not share the CPUs with an idle-polling service

        # 4. the chain a user would otherwise assemble.
        bases, records = chain_servers(home, logs, servers)
        out["chain_servers"] = records
        if all("error" not in r for r in records.values()):
            pids = [r["pid"] for r in records.values()]
            for kind in ("chain", "feast", "mlflow"):
                out["load"][f"python {kind}"] = _child(
                    f"python generator -> {kind}",
                    load,
                    kind=kind,
                    targets=bases,
                    ids_file=str(ids_file),
                    server_pids=pids,
                    **timing,
                )
        else:
            failed = "; ".join(f"{k}: {r['error']}" for k, r in records.items() if "error" in r)
            out["load"]["python chain"] = {"error": failed}
    finally:
        for server in reversed(servers):
            server.stop()

    # 5. batch scoring, with every server stopped.
    print(f"clv score --all --out {SCORES_OUT} ...", flush=True)
    try:
        run = run_command(_cli(home, "score", "--all", "--out", str(SCORES_OUT)))
        lines = run.stdout.strip().splitlines()
        out["score_all"] = {
            "seconds": run.seconds,
            "peak_rss_mb": run.peak_rss_mb,
            "last_line": lines[-1] if lines else "",
        }
        print(f"  {run.seconds:.1f} s", flush=True)
    except RuntimeError as exc:
        print(f"  FAILED: {exc}", flush=True)
        out["score_all"] = {"error": str(exc)}
    repeats = QUICK_SCORING_REPEATS if args.quick else SCORING_REPEATS
    out["scoring"] = _child(
        "score_matrix of every customer champion", scoring_throughput, home=str(home),
        repeats=repeats,
    )  # fmt: skip
    out["engine"] = _child(
        "engine.score_customers in process", engine_latency, home=str(home), ids_file=str(ids_file)
    )
    return out


# ---- tables ---------------------------------------------------------------------------------
def _cold_rows(runs: list[dict[str, Any]]) -> list[list[Any]]:
    target = f"<= {COLD_START_TARGET_SECONDS:g} s"
    rows = []
    for n, r in enumerate(runs, 1):
        if "error" in r:
            rows.append([f"run {n}: failed", None, None, None, target, False])
            continue
        met = r["readyz_s"] <= COLD_START_TARGET_SECONDS
        rows.append([f"run {n}", r["livez_s"], r["readyz_s"], r["snapshot_s"], target, met])
    ok = [r for r in runs if "error" not in r]
    if len(ok) == len(runs) and runs:
        median = {k: statistics.median(r[k] for r in ok) for k in ("livez_s", "readyz_s")}
        snapshot = statistics.median(r["snapshot_s"] for r in ok)
        met = median["readyz_s"] <= COLD_START_TARGET_SECONDS
        rows.append(["median", median["livez_s"], median["readyz_s"], snapshot, target, met])
    return rows


LOAD_ROWS = {
    "python stub": ("python asyncio+httpx", "asyncio stub (generator ceiling)"),
    "python ping": ("python asyncio+httpx", "POST /ping (floor)"),
    "python score": ("python asyncio+httpx", "POST /score"),
    "wrk ping": ("wrk -t1 (Lua bodies)", "POST /ping (floor)"),
    "wrk score": ("wrk -t1 (Lua bodies)", "POST /score"),
    "python chain": ("python asyncio+httpx", "chain: feast lookup + mlflow invocation"),
    "python feast": ("python asyncio+httpx", "  feast /get-online-features alone"),
    "python mlflow": ("python asyncio+httpx", "  mlflow /invocations alone (fixed row)"),
}


def _share(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.0f}%"


def _load_rows(load_results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for key, (generator, endpoint) in LOAD_ROWS.items():
        r = load_results.get(key)
        if r is None:
            continue
        if "error" in r or "skipped" in r:
            why = "skipped" if "skipped" in r else "failed"
            rows.append([generator, f"{endpoint}: {why}", *[None] * 7])
            continue
        rows.append(
            [
                generator,
                endpoint,
                r["requests"],
                r["errors"],
                r["throughput_rps"],
                r["p50_ms"],
                r["p99_ms"],
                _share(r.get("generator_cpu_share")),
                _share(r.get("server_cpu_share")),
            ]
        )
    return rows


def _ratio_row(
    check: str, ours: dict[str, Any] | None, other: dict[str, Any] | None, metric: str,
    target: str, passes: Any,
) -> list[Any]:  # fmt: skip
    if not ours or not other or "throughput_rps" not in ours or "throughput_rps" not in other:
        return [check, None, None, None, target, False]
    value = (ours[metric] or 0.0) / (other[metric] or float("nan"))
    return [check, ours[metric], other[metric], value, target, bool(passes(value))]


def _target_rows(load_results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for generator in ("python", "wrk"):
        ours, floor = load_results.get(f"{generator} score"), load_results.get(f"{generator} ping")
        if ours is None or "skipped" in ours:
            continue
        rows.append(
            _ratio_row(
                f"{generator}: /score req/s over /ping req/s",
                ours, floor, "throughput_rps",
                f">= {THROUGHPUT_FLOOR_SHARE:.2f}", lambda v: v >= THROUGHPUT_FLOOR_SHARE,
            )  # fmt: skip
        )
        rows.append(
            _ratio_row(
                f"{generator}: /score p99 over /ping p99",
                ours, floor, "p99_ms",
                f"<= {P99_FLOOR_FACTOR:g}", lambda v: v <= P99_FLOOR_FACTOR,
            )  # fmt: skip
        )
    ours, chain = load_results.get("python score"), load_results.get("python chain")
    rows.append(
        _ratio_row(
            "python: /score req/s over chain req/s",
            ours, chain, "throughput_rps",
            f">= {CHAIN_THROUGHPUT_FACTOR:g}", lambda v: v >= CHAIN_THROUGHPUT_FACTOR,
        )  # fmt: skip
    )
    rows.append(
        _ratio_row(
            "python: /score p99 over chain p99",
            ours, chain, "p99_ms", "< 1", lambda v: v < 1.0,
        )  # fmt: skip
    )
    return rows


def _chain_rows(records: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name in ("feast", "mlflow"):
        r = records.get(name)
        if r is None:
            continue
        if "error" in r:
            tail = " | ".join(r["error"].splitlines()[-3:])
            rows.append([r["command"], "failed", None, tail])
        else:
            rows.append([r["command"], "ok", r["ready_s"], ""])
    return rows


def _batch_rows(batch: dict[str, Any] | None) -> list[list[Any]]:
    target = f"p99 <= {BATCH_P99_TARGET_MS:g} ms"
    if not batch or "p99_ms" not in batch or batch["p99_ms"] is None:
        return [["failed or skipped", None, None, None, None, None, target, False]]
    return [
        [
            f"POST /score_batch, {batch['ids_per_call']:,} ids",
            batch["calls"],
            batch["errors"],
            batch["p50_ms"],
            batch["p99_ms"],
            batch["max_ms"],
            target,
            batch["p99_ms"] <= BATCH_P99_TARGET_MS and batch["errors"] == 0,
        ]
    ]


def _scoring_rows(score_all: dict[str, Any], scoring: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    if "error" in score_all:
        rows.append(["clv score --all: failed", None, None, None, "(reference)", None])
    else:
        rows.append(["clv score --all (whole process)", None, score_all["seconds"], None,
                     "(reference)", None])  # fmt: skip
    if "variants" not in scoring:
        rows.append(["score_matrix: failed", None, None, None, "", False])
        return rows
    target = f">= {SCORING_TARGET_PER_SECOND:,.0f}/s"
    rows.append(["champion download + load (4 models)", None,
                 scoring["champion_load_seconds"], None, "(reference)", None])  # fmt: skip
    rows.append(["historical_frame (feature matrix)", scoring["rows"],
                 scoring["historical_frame_seconds"], None, "(reference)", None])  # fmt: skip
    for name, v in scoring["variants"].items():
        rows.append([f"score_matrix, 4 models, {name}", scoring["rows"], v["seconds"],
                     v["customers_per_second"], target,
                     v["customers_per_second"] >= SCORING_TARGET_PER_SECOND])  # fmt: skip
        for model, seconds in v["per_model_seconds"].items():
            rows.append([f"  {model}", scoring["rows"], seconds, scoring["rows"] / seconds,
                         "(reference)", None])  # fmt: skip
    return rows


def _engine_rows(engine: dict[str, Any]) -> list[list[Any]]:
    if "calls" not in engine:
        return [["failed", None, None, None]]
    return [
        [step, engine["calls"], engine[key]["p50_ms"], engine[key]["p99_ms"]]
        for step, key in (
            ("engine.score_customers([id])", "score_customers"),
            ("CustomerScores(**result)", "pydantic_model"),
            ("  .model_dump_json()", "model_dump_json"),
        )
    ]


def tables(home_info: dict[str, Any], out: dict[str, Any], args: argparse.Namespace) -> list:
    timing = _load_args(args)
    home_rows = [[s["command"], s["seconds"]] for s in home_info.get("built", [])]
    home_rows = home_rows or [[f"given by {home_info['variable']} (read-only)", None]]
    result = [
        table(f"Home: {home_info['home']} ({out.get('active_customers', 0):,} active customers)",
              ["step", "seconds"], home_rows),  # fmt: skip
        table(
            "Part 1: cold start of `.venv/bin/clv serve --port P`, seconds from launch "
            "(snapshot = /models reports the precomputed scores)",
            ["run", "to /livez s", "measured to /readyz s", "to snapshot s", "target", "met"],
            _cold_rows(out.get("cold_starts", [])),
        ),
        table(
            f"Part 2: closed loop at concurrency {CONCURRENCY}, {timing['seconds']:g} s after a "
            f"{timing['warmup_seconds']:g} s warm-up, generator in its own process; CPU shares "
            f"are of one core over the window (2 cores in all)",
            ["generator", "endpoint", "requests", "errors", "req/s", "p50 ms", "p99 ms",
             "gen CPU", "server CPU"],  # fmt: skip
            _load_rows(out.get("load", {})),
        ),
        table(
            "Part 2 and 4 targets: /score against the floor (/ping, same service) and against "
            f"the Feast + MLflow chain ({CHAIN_MODEL} only, no reasons)",
            ["check", "/score", "other", "measured ratio", "target", "met"],
            _target_rows(out.get("load", {})),
        ),
        table(
            "Part 4: chain servers (started side by side)",
            ["command", "status", "ready s", "error tail"],
            _chain_rows(out.get("chain_servers", {})) or [["not started", "", None, ""]],
        ),
        table(
            f"Part 3: /score_batch, sequential calls of different active ids "
            f"({BATCH_WARMUP_CALLS} warm-up calls)",
            ["call", "calls", "errors", "p50 ms", "measured p99 ms", "max ms", "target", "met"],
            _batch_rows(out.get("batch")),
        ),
        table(
            "Part 5: batch scoring of every active customer (score_matrix: median of "
            "repeats after a warm-up, all servers stopped)",
            ["step", "rows", "seconds", "measured customers/s", "target", "met"],
            _scoring_rows(out.get("score_all", {}), out.get("scoring", {})),
        ),
        table(
            f"Where /score time goes in process (no HTTP), snapshot built, "
            f"{ENGINE_CALLS:,} calls after 100 warm-up",
            ["step", "calls", "p50 ms", "p99 ms"],
            _engine_rows(out.get("engine", {})),
        ),
    ]
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the service, the chain and batch scoring against a given or freshly built
    home; return the results and tables."""
    for tool in (CLV, FEAST, MLFLOW):
        if not tool.exists():
            raise FileNotFoundError(f"{tool} not found; install the project into .venv first")
    work = Path(tempfile.mkdtemp(prefix="bench-serving-", dir="/tmp"))
    given = given_home()
    built_home: Path | None = None
    try:
        if given is not None:
            home, variable = given
            check_home(home)
            home_info: dict[str, Any] = {"home": str(home), "variable": variable}
        else:
            built_home = home = Path(tempfile.mkdtemp(prefix="bench-serving-home-", dir="/tmp"))
            home_info = {"home": str(home), "variable": None, "built": build_home(home)}
        out = measure(home, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if built_home is not None:
            shutil.rmtree(built_home, ignore_errors=True)
    return {"seed": SEED, "home": home_info, **out, "tables": tables(home_info, out, args)}
