"""Serving benchmark: the real `clv serve` against the framework's floor and against the chain a
user would otherwise assemble (Feast's feature server, then `mlflow models serve`), plus
batch scoring.

Targets (from the issue), all at the default size on one machine:

1. cold start, launching `clv serve` to the first 200 on /readyz, within 15 s (median of
   three runs);
2. POST /score at concurrency 8 (closed loop) reaching 80% of the throughput of POST /ping,
   the trivial route of the same service, with p99 within 1.5x its p99;
3. POST /score_batch of 1,000 ids with p99 within 100 ms;
4. /score at 5x the throughput of the Feast-then-MLflow chain, with a lower p99;
5. `clv score --all` scoring every active customer and dormant contact with all five
   champions at 100,000 entities/s, with and without reasons. The rate is the entities
   written (customers scored by the four customer models, dormant contacts by the
   reactivation model) over the seconds of the scoring phase (`BatchScores.seconds`: every
   model on its population's matrix, then the output frame) once the process has loaded the
   champions and read the features; the whole process (`clv score --all --out FILE` from
   launch to exit, start-up and the parquet write included) is timed too.

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
import operator
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
from collections.abc import Callable, Sequence
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
WORKER_BOOT = "Booting worker"  # gunicorn's log line for each worker it starts

COLD_STARTS, QUICK_COLD_STARTS = 3, 1
COLD_START_TARGET_SECONDS = 15.0
READY_LIMIT_SECONDS = 180.0  # clv serve
CHAIN_READY_LIMIT_SECONDS = 90.0  # feast serve, mlflow models serve
SNAPSHOT_LIMIT_SECONDS = 180.0
POLL_SECONDS = 0.05
# BentoML's log lines that split a cold start: the CLI has imported the service and starts
# the server; the worker has imported it again and run `Scoring.__init__`.
LOG_MARKS = {
    "cli_imported_s": "Starting production HTTP BentoServer",
    "worker_initialized_s": "Service clv_scoring initialized",
}

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
SCORE_ALL_RUNS, QUICK_SCORE_ALL_RUNS = 3, 1
SCORING_TARGET_PER_SECOND = 100_000.0
SCORING_VARIANTS = {"without reasons": False, "with reasons": True}  # both targeted
ENGINE_CALLS = 2000
ENGINE_STEPS = {
    "json": "engine.snapshot_json(ids) + join (what the routes do)",
    "engine": "engine.score_customers(ids) -> dicts (reference)",
    "models": "  CustomerScores(**result) per id (reference)",
    "response": "  pydantic validate + dump_json (reference)",
}


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
    started: float = 0.0  # perf_counter at launch
    launched_at: float = 0.0  # wall clock at launch, to place the server's log stamps

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.started = time.perf_counter()
            self.launched_at = time.time()
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

    def logged_after(self, marker: str) -> float | None:
        """Seconds from launch to the first log line containing `marker`, by the line's
        leading ISO time stamp (BentoML's have one-second resolution)."""
        import datetime as dt

        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        for line in text.splitlines():
            if marker in line:
                try:
                    stamp = dt.datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()
                except ValueError:
                    return None
                return stamp - self.launched_at
        return None


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


def _tree_cpu_seconds(pids: Sequence[int]) -> tuple[float, frozenset[int]]:
    """User + system CPU seconds of processes and all their descendants, and their pids (a
    process that exits takes its CPU seconds with it, so a share over a window is only valid
    when every process seen at its start is still there at its end)."""
    import psutil

    total = 0.0
    seen: set[int] = set()
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
            seen.add(proc.pid)
    return total, frozenset(seen)


def _server_share(
    before: tuple[float, frozenset[int]], after: tuple[float, frozenset[int]], seconds: float
) -> tuple[float | None, int]:
    """CPU share of one core over a window, or None when processes exited during it (e.g. a
    gunicorn worker recycled after --max-requests); and how many exited."""
    gone = len(before[1] - after[1])
    return (None if gone else (after[0] - before[0]) / seconds), gone


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, over all cores."""
    import psutil

    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    total = sum(times)
    return total - idle, total


def _busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of all cores the machine was busy between two `_machine_busy` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else float("nan")


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
                response = await clients["service"].post(
                    "/ping", content=b"{}", headers=json_headers
                )
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
        usage: dict[str, Any] = {}

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
            usage["machine0"] = _machine_busy()
            await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
            usage["gen1"], usage["srv1"] = time.process_time(), _tree_cpu_seconds(server_pids)
            usage["machine1"] = _machine_busy()

        try:
            await asyncio.gather(meter(), *(worker(n) for n in range(concurrency)))
        finally:
            for client in clients.values():
                await client.aclose()
        done = len(latencies) + len(errors)
        share, gone = _server_share(usage["srv0"], usage["srv1"], seconds)
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
            "server_cpu_share": share if server_pids else None,
            "server_processes_exited": gone,
            "machine_busy_share": _busy_share(usage["machine0"], usage["machine1"]),
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


def wrk_script(path: Path, kind: str, ids_lines: Path) -> Path:
    """A Lua script: POST /ping with {}, or POST /score cycling through the ids of
    `ids_lines` (one per line)."""
    if kind == "ping":
        body = (
            'wrk.method = "POST"\nwrk.body = "{}"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    else:
        body = (
            f"local ids = {{}}\nfor line in io.lines({json.dumps(str(ids_lines))}) do\n"
            "  ids[#ids + 1] = line\nend\nlocal n = 0\n"
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
    cpu0, machine0 = _tree_cpu_seconds([server_pid]), _machine_busy()
    done = once(seconds)
    cpu1, machine1 = _tree_cpu_seconds([server_pid]), _machine_busy()
    share, gone = _server_share(cpu0, cpu1, seconds)
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
        "server_cpu_share": share,
        "server_processes_exited": gone,
        "machine_busy_share": _busy_share(machine0, machine1),
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


def _model_seconds(scorer: Any, matrix: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds of one model's `score_matrix` with and without reasons and of its
    bare `predict_matrix` on `matrix`, after a warm-up call of each."""
    from serving.scoring import score_matrix

    steps: dict[str, Callable[[], Any]] = {
        "with reasons": lambda: score_matrix(scorer, matrix, reasons=True),
        "without reasons": lambda: score_matrix(scorer, matrix, reasons=False),
        "predict_matrix only": lambda: scorer.predict_matrix(matrix),
    }
    seconds = {}
    for step, call in steps.items():
        call()  # warms XGBoost's predictor up
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            call()
            times.append(time.perf_counter() - began)
        seconds[step] = statistics.median(times)
    return seconds


def scoring_throughput(home: str, repeats: int = SCORING_REPEATS) -> dict[str, Any]:
    """Child: `clv score --all`'s own work in process (`batch_scores`), with and without
    reasons, `repeats` times each after a warm-up call (every call loads the champions and
    reads the features again, then scores); then, on the same matrices, each model's
    `score_matrix` with and without reasons and its bare `predict_matrix` (medians)."""
    settings = _child_setup(home)
    from clv.compose import engine_config
    from clv.workflows import batch_scores
    from serving.engine import Engine

    variants: dict[str, Any] = {}
    for variant, reasons in SCORING_VARIANTS.items():
        runs = [batch_scores(settings, reasons=reasons) for _ in range(repeats + 1)][1:]
        kinds = ("champions", "features", "scoring", "scoring_customer")
        phases = {k: [r.seconds[k] for r in runs] for k in kinds}
        variants[variant] = {
            "rows": len(runs[0].frame),
            "customers": int((runs[0].frame["kind"] == "customer").sum()),
            "models": runs[0].models,
            **{f"{k}_seconds": v for k, v in phases.items()},
        }

    engine = Engine(engine_config(settings), prebuild_responses=False, online_store=False)
    engine.refresh()
    state = engine.state
    per_model: dict[str, Any] = {}
    for population in (state.customers, state.dormant):
        scored = population.tables if population is not None else {}
        for name, scores in scored.items():
            champion = state.champions[name]
            booster = champion.scorer.booster
            per_model[name] = {
                "version": champion.version,
                "rows": len(scores.values),
                "features": len(champion.features),
                "trees": booster.num_boosted_rounds()
                if booster is not None and champion.scorer.linear is None
                else None,  # a linear booster has weights, no trees
                "calibration": champion.scorer.meta.get("calibration", {}).get("method"),
                "seconds": _model_seconds(champion.scorer, scores.values, repeats),
            }
    return {"repeats": repeats, "variants": variants, "models": per_model}


def engine_latency(
    home: str,
    ids_file: str,
    calls: int = ENGINE_CALLS,
    batch_calls: int = BATCH_CALLS,
    seed: int = SEED,
) -> dict[str, Any]:
    """Child: the cost of /score and /score_batch without HTTP, from a built snapshot: the
    routes' own work (the snapshot's pre-serialised answers, joined for a batch), and for
    reference the dict answers, the pydantic response models and what FastAPI would do with
    them (validate against the response model, dump JSON)."""
    settings = _child_setup(home)
    from pydantic import TypeAdapter

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
    one: TypeAdapter[Any] = TypeAdapter(CustomerScores)
    many: TypeAdapter[Any] = TypeAdapter(list[CustomerScores])

    rng = random.Random(seed)

    def timed(size: int, warmup: int, n: int) -> dict[str, Any]:
        adapter = one if size == 1 else many
        seconds: dict[str, list[float]] = {step: [] for step in ENGINE_STEPS}
        for call in range(warmup + n):
            batch = rng.sample(ids, size)
            t0 = time.perf_counter()
            parts = engine.snapshot_json(batch)
            if parts is None:
                raise LookupError("the snapshot has no pre-serialised answers")
            _ = parts[0] if size == 1 else b"[" + b",".join(parts) + b"]"
            t1 = time.perf_counter()
            results = engine.score_customers(batch)
            t2 = time.perf_counter()
            models = [CustomerScores(**r) for r in results]
            t3 = time.perf_counter()
            adapter.dump_json(adapter.validate_python(models[0] if size == 1 else models))
            t4 = time.perf_counter()
            if call >= warmup:
                steps = (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
                for step, value in zip(ENGINE_STEPS, steps, strict=True):
                    seconds[step].append(value)
        return {"ids": size, "calls": n, **{k: _summary(v) for k, v in seconds.items()}}

    return {
        "refresh_seconds": refresh_seconds,
        "single": timed(1, 100, calls),
        "batch": timed(BATCH_IDS, BATCH_WARMUP_CALLS, batch_calls),
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
    marks = {key: server.logged_after(marker) for key, marker in LOG_MARKS.items()}
    return {"base": base, **marks, "livez_s": livez, "readyz_s": readyz, "snapshot_s": snapshot}


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
    for server in (feast, mlflow):
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
        records[name]["log"] = str(server.log)
    return bases, records


def _load_args(args: argparse.Namespace) -> dict[str, float]:
    quick = args.quick
    return {
        "warmup_seconds": QUICK_WARMUP_SECONDS if quick else WARMUP_SECONDS,
        "seconds": QUICK_LOAD_SECONDS if quick else LOAD_SECONDS,
    }


@dataclass(frozen=True)
class Inputs:
    """What every part reads: the home, the active ids (JSON and one per line), log folder."""

    home: Path
    work: Path
    ids_file: Path
    ids_lines: Path
    logs: Path
    timing: dict[str, float]
    quick: bool


def generator_ceiling(inputs: Inputs, servers: list[Server]) -> dict[str, Any]:
    """The Python generator against the asyncio stub: what it can send at best here."""
    port = free_port()
    code = f"from bench.bench_serving import stub_server; stub_server({port})"
    stub = Server("stub", [sys.executable, "-c", code], inputs.logs / "stub.log")
    stub.env = server_env(inputs.home)
    servers.append(stub)
    stub.start()
    try:
        wait_for(stub, f"http://{HOST}:{port}/ping", 30.0)
        assert stub.proc is not None
        return _child(
            "python generator -> asyncio stub (generator ceiling)",
            load,
            kind="ping",
            targets={"service": f"http://{HOST}:{port}"},
            ids_file=str(inputs.ids_file),
            server_pids=[stub.proc.pid],
            **inputs.timing,
        )
    except ServerFailed as exc:
        return {"error": str(exc)}
    finally:
        stub.stop()


def service_load(inputs: Inputs, base: str, pid: int) -> dict[str, Any]:
    """/ping and /score under the Python generator and, when installed, wrk."""
    results: dict[str, Any] = {}
    for kind in ("ping", "score"):
        results[f"python {kind}"] = _child(
            f"python generator -> POST /{kind}",
            load,
            kind=kind,
            targets={"service": base},
            ids_file=str(inputs.ids_file),
            server_pids=[pid],
            **inputs.timing,
        )
    wrk = shutil.which("wrk")
    for kind in ("ping", "score"):
        if wrk is None:
            results[f"wrk {kind}"] = {"skipped": "wrk is not on PATH (apt-get install -y wrk)"}
            continue
        print(f"wrk -t1 -c{CONCURRENCY} -> POST /{kind} ...", flush=True)
        script = wrk_script(inputs.work / f"{kind}.lua", kind, inputs.ids_lines)
        warmup, seconds = inputs.timing["warmup_seconds"], inputs.timing["seconds"]
        try:
            result = run_wrk(wrk, f"{base}/{kind}", script, warmup, seconds, pid)
            print(
                f"  {result['throughput_rps']:.0f} req/s, p99 {result['p99_ms']:.1f} ms", flush=True
            )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"  FAILED: {exc}", flush=True)
            result = {"error": str(exc)}
        results[f"wrk {kind}"] = result
    return results


def service_parts(inputs: Inputs, servers: list[Server]) -> dict[str, Any]:
    """Parts 1 to 3: cold starts; the last server then takes the load and the batches."""
    out: dict[str, Any] = {"cold_starts": [], "load": {}}
    for n in range(QUICK_COLD_STARTS if inputs.quick else COLD_STARTS):
        if servers:
            servers[-1].stop()
        out["cold_starts"].append(cold_start(inputs.home, inputs.logs, f"run{n + 1}", servers))
    last = out["cold_starts"][-1]
    service = servers[-1]
    if "error" in last or service.proc is None:
        out["load"]["python score"] = {"error": last.get("error", "clv serve is not running")}
        return out
    out["load"]["python stub"] = generator_ceiling(inputs, servers)
    out["load"].update(service_load(inputs, last["base"], service.proc.pid))
    out["batch"] = _child(
        f"POST /score_batch of {BATCH_IDS:,} ids",
        batch_latency,
        base=last["base"],
        ids_file=str(inputs.ids_file),
        calls=QUICK_BATCH_CALLS if inputs.quick else BATCH_CALLS,
    )
    # The chain must not share the CPUs with a service that keeps polling the registry.
    service.stop()
    return out


def chain_parts(inputs: Inputs, servers: list[Server]) -> dict[str, Any]:
    """Part 4: the Feast-then-MLflow chain, and each of its servers alone."""
    try:
        bases, records = chain_servers(inputs.home, inputs.logs, servers)
    except subprocess.CalledProcessError as exc:
        error = f"`clv features env` exited with {exc.returncode}: {exc.stderr.strip()[-400:]}"
        bases, records = {}, {"feast": {"command": "clv features env", "error": error}}
    out: dict[str, Any] = {"chain_servers": records, "load": {}}
    failed = {name: r["error"] for name, r in records.items() if "error" in r}
    if failed:
        out["load"]["python chain"] = {"error": "; ".join(f"{k}: {v}" for k, v in failed.items())}
        return out
    pids = [r["pid"] for r in records.values()]
    for kind in ("chain", "feast", "mlflow"):
        out["load"][f"python {kind}"] = _child(
            f"python generator -> {kind}",
            load,
            kind=kind,
            targets=bases,
            ids_file=str(inputs.ids_file),
            server_pids=pids,
            **inputs.timing,
        )
    for record in records.values():
        # gunicorn (under `feast serve`) recycles its worker after --max-requests (1000).
        text = Path(record["log"]).read_text(errors="replace")
        record["worker_boots"] = text.count(WORKER_BOOT)
    return out


def score_all_runs(home: Path, runs: int) -> dict[str, Any]:
    """`clv score --all --out FILE` as a whole process, with and without `--reasons`, `runs`
    times each (alternating); seconds from launch to exit, and the command's own report."""
    out: dict[str, Any] = {}
    argv = ["score", "--all", "--out", str(SCORES_OUT)]
    for variant in SCORING_VARIANTS:
        out[variant] = {"seconds": [], "peak_rss_mb": [], "last_line": ""}
    for n in range(runs):
        for variant, reasons in SCORING_VARIANTS.items():
            command = [*argv, "--reasons"] if reasons else argv
            print(f"clv {' '.join(command)} (run {n + 1}) ...", flush=True)
            try:
                run = run_command(_cli(home, *command))
            except RuntimeError as exc:
                print(f"  FAILED: {exc}", flush=True)
                out[variant] = {"error": str(exc)}
                continue
            if "error" in out[variant]:
                continue
            lines = run.stdout.strip().splitlines()
            out[variant]["seconds"].append(run.seconds)
            out[variant]["peak_rss_mb"].append(run.peak_rss_mb)
            out[variant]["last_line"] = lines[-1] if lines else ""
            print(f"  {run.seconds:.1f} s: {out[variant]['last_line']}", flush=True)
    if SCORES_OUT.exists():
        import pandas as pd

        rows = len(pd.read_parquet(SCORES_OUT, columns=["entity_id"]))
        for record in out.values():
            record["rows"] = rows
    return out


def batch_parts(inputs: Inputs) -> dict[str, Any]:
    """Part 5, with every server stopped: `clv score --all` as a whole process, its scoring
    phase in process, and the engine's per-request cost."""
    out: dict[str, Any] = {}
    runs = QUICK_SCORE_ALL_RUNS if inputs.quick else SCORE_ALL_RUNS
    out["score_all"] = score_all_runs(inputs.home, runs)
    out["scoring"] = _child(
        "clv score --all's scoring phase in process (batch_scores)",
        scoring_throughput,
        home=str(inputs.home),
        repeats=QUICK_SCORING_REPEATS if inputs.quick else SCORING_REPEATS,
    )
    out["engine"] = _child(
        "engine.score_customers in process",
        engine_latency,
        home=str(inputs.home),
        ids_file=str(inputs.ids_file),
        batch_calls=QUICK_BATCH_CALLS if inputs.quick else BATCH_CALLS,
    )
    return out


def measure(home: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every part against `home`; every server started here is stopped before returning."""
    ids = active_ids(home)
    inputs = Inputs(
        home=home,
        work=work,
        ids_file=work / "active_ids.json",
        ids_lines=work / "active_ids.txt",
        logs=work / "logs",
        timing=_load_args(args),
        quick=args.quick,
    )
    inputs.ids_file.write_text(json.dumps(ids))
    inputs.ids_lines.write_text("\n".join(ids) + "\n")
    inputs.logs.mkdir()
    servers: list[Server] = []
    try:
        out = service_parts(inputs, servers)
        chain = chain_parts(inputs, servers)
    finally:
        for server in reversed(servers):
            server.stop()
    out["load"].update(chain.pop("load"))
    return {"active_customers": len(ids), **out, **chain, **batch_parts(inputs)}


# ---- tables ---------------------------------------------------------------------------------
def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if len(present) == len(values) else None


COLD_KEYS = ("cli_imported_s", "worker_initialized_s", "livez_s", "readyz_s", "snapshot_s")


def _cold_rows(runs: list[dict[str, Any]]) -> list[list[Any]]:
    target = f"<= {COLD_START_TARGET_SECONDS:g} s"
    rows: list[list[Any]] = []
    for n, r in enumerate(runs, 1):
        if "error" in r:
            rows.append([f"run {n}: failed", *[None] * len(COLD_KEYS), target, False])
            continue
        met = r["readyz_s"] <= COLD_START_TARGET_SECONDS
        rows.append([f"run {n}", *(r[k] for k in COLD_KEYS), target, met])
    if runs and all("error" not in r for r in runs):
        present = [[r[k] for r in runs if r[k] is not None] for k in COLD_KEYS]
        rows.append(["best", *(min(v) if v else None for v in present), target, None])
        medians = [_median([r[k] for r in runs]) for k in COLD_KEYS]
        ready = statistics.median(r["readyz_s"] for r in runs)
        rows.append(["median", *medians, target, ready <= COLD_START_TARGET_SECONDS])
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


def _load_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for key, (generator, endpoint) in LOAD_ROWS.items():
        r = results.get(key)
        if r is None:
            continue
        if "throughput_rps" not in r:
            why = "skipped" if "skipped" in r else "failed"
            rows.append([generator, f"{endpoint}: {why}", *[None] * 8])
            continue
        shares = [
            _share(r.get(k))
            for k in ("generator_cpu_share", "server_cpu_share", "machine_busy_share")
        ]
        if r.get("server_processes_exited"):
            shares[1] = f"n/a ({r['server_processes_exited']} exited)"
        numbers = [r[k] for k in ("requests", "errors", "throughput_rps", "p50_ms", "p99_ms")]
        rows.append([generator, endpoint, *numbers, *shares])
    return rows


OPERATORS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class Check:
    """A target on the ratio of one metric of a /score run to the same metric of another."""

    label: str
    ours: str
    other: str
    metric: str
    op: str
    bound: float

    def row(self, results: dict[str, Any]) -> list[Any] | None:
        """[check, ours, other, ratio, target, met]; None when our run was skipped."""
        ours, other = results.get(self.ours), results.get(self.other)
        target = f"{self.op} {self.bound:g}"
        if ours is not None and "skipped" in ours:
            return None
        a = (ours or {}).get(self.metric)
        b = (other or {}).get(self.metric)
        if a is None or not b:
            return [self.label, a, b, None, target, False]
        ratio = a / b
        return [self.label, a, b, ratio, target, bool(OPERATORS[self.op](ratio, self.bound))]


CHECKS = [
    *(
        check
        for g in ("python", "wrk")
        for check in (
            Check(
                f"{g}: /score req/s over /ping req/s",
                f"{g} score",
                f"{g} ping",
                "throughput_rps",
                ">=",
                THROUGHPUT_FLOOR_SHARE,
            ),
            Check(
                f"{g}: /score p99 over /ping p99",
                f"{g} score",
                f"{g} ping",
                "p99_ms",
                "<=",
                P99_FLOOR_FACTOR,
            ),
        )
    ),
    Check(
        "python: /score req/s over chain req/s",
        "python score",
        "python chain",
        "throughput_rps",
        ">=",
        CHAIN_THROUGHPUT_FACTOR,
    ),
    Check("python: /score p99 over chain p99", "python score", "python chain", "p99_ms", "<", 1.0),
]


def _chain_rows(records: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for r in records.values():
        if "error" in r:
            tail = " | ".join(r["error"].splitlines()[-3:])
            rows.append([r["command"], "failed", None, None, tail])
        else:
            rows.append([r["command"], "ok", r["ready_s"], r.get("worker_boots"), ""])
    return rows or [["not started", "", None, None, ""]]


def _batch_rows(batch: dict[str, Any] | None) -> list[list[Any]]:
    target = f"p99 <= {BATCH_P99_TARGET_MS:g} ms"
    if not batch or batch.get("p99_ms") is None:
        return [["POST /score_batch: failed", None, None, None, None, None, target, False]]
    met = batch["p99_ms"] <= BATCH_P99_TARGET_MS and batch["errors"] == 0
    numbers = [batch[k] for k in ("calls", "errors", "p50_ms", "p99_ms", "max_ms")]
    return [[f"POST /score_batch, {batch['ids_per_call']:,} ids", *numbers, target, met]]


def _spread(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(best, median) of some seconds; (None, None) when there are none."""
    return (min(values), statistics.median(values)) if values else (None, None)


def _rate(rows: int | None, seconds: float | None) -> float | None:
    return rows / seconds if rows and seconds else None


def _scoring_rows(score_all: dict[str, Any], scoring: dict[str, Any]) -> list[list[Any]]:
    """[step, rows, best s, median s, rate at best, rate at median, target, met]."""
    reference = "(reference)"
    target = f">= {SCORING_TARGET_PER_SECOND:,.0f}/s"
    rows: list[list[Any]] = []
    for variant, record in score_all.items():
        label = f"clv score --all{' --reasons' if SCORING_VARIANTS[variant] else ''}"
        if "error" in record or not record.get("seconds"):
            rows.append([f"{label}: failed", None, None, None, None, None, reference, None])
            continue
        best, median = _spread(record["seconds"])
        n = record.get("rows")
        rows.append([f"{label} (whole process)", n, best, median, _rate(n, best),
                     _rate(n, median), reference, None])  # fmt: skip
    if "variants" not in scoring:
        return [*rows, ["scoring phase: failed", None, None, None, None, None, target, False]]
    for variant, v in scoring["variants"].items():
        n = v["rows"]
        for phase, what in (("champions", "champions: registry + load"),
                            ("features", "features: the latest cutoff's matrices")):  # fmt: skip
            best, median = _spread(v[f"{phase}_seconds"])
            rows.append([f"  {what} ({variant})", n, best, median, None, None, reference, None])
        best, median = _spread(v["scoring_seconds"])
        met = median is not None and n / median >= SCORING_TARGET_PER_SECOND
        label = f"scoring phase, {v['models']} models, {variant}"
        rows.append([label, n, best, median, _rate(n, best), _rate(n, median), target, met])
        # The target counts the whole base, all five models together (reactivation's own
        # population is the dormant contacts); active customers alone are shown beside it.
        if v.get("customers"):
            c = v["customers"]
            best, median = _spread(v["scoring_customer_seconds"])
            label = f"  active customers only, 4 customer models, {variant}"
            rows.append([label, c, best, median, _rate(c, best), _rate(c, median), reference,
                         None])  # fmt: skip
    for name, info in scoring.get("models", {}).items():
        shape = f"{info['trees']} trees" if info["trees"] is not None else "linear"
        what = f"  {name} ({shape}, {info['features']} features)"
        for step, seconds in info["seconds"].items():
            n = info["rows"]
            rows.append([f"{what}: {step}", n, None, seconds, None, _rate(n, seconds),
                         reference, None])  # fmt: skip
    return rows


def _engine_rows(engine: dict[str, Any]) -> list[list[Any]]:
    if "single" not in engine:
        return [["failed", None, None, None, None]]
    rows = []
    for kind in ("single", "batch"):
        part = engine[kind]
        for step, label in ENGINE_STEPS.items():
            rows.append([label, part["ids"], part["calls"], part[step]["p50_ms"]])
            rows[-1].append(part[step]["p99_ms"])
    return rows


def make_tables(home: dict[str, Any], out: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """The printed tables, from the results of `measure`."""
    seconds = QUICK_LOAD_SECONDS if quick else LOAD_SECONDS
    warmup = QUICK_WARMUP_SECONDS if quick else WARMUP_SECONDS
    load_results = out.get("load", {})
    home_rows = [[s["command"], s["seconds"]] for s in home.get("built", [])]
    home_rows = home_rows or [[f"given by {home['variable']}, used read-only", None]]
    busy = home.get("background_busy_share")
    home_rows.append([f"machine busy before the run (other work): {_share(busy)}", None])
    checks = [row for check in CHECKS if (row := check.row(load_results)) is not None]
    return [
        table(
            f"Home: {home['home']} ({out.get('active_customers', 0):,} active customers)",
            ["step", "seconds"],
            home_rows,
        ),
        table(
            "Part 1: cold start of `.venv/bin/clv serve --port P`, seconds from launch (CLI "
            "imported, worker initialized: BentoML log stamps, 1 s resolution; snapshot: "
            "/models reports the precomputed scores)",
            ["run", "CLI imported", "worker initialized", "/livez", "measured /readyz"]
            + ["snapshot", "target", "met"],
            _cold_rows(out.get("cold_starts", [])),
        ),
        table(
            f"Part 2 and 4: closed loop at concurrency {CONCURRENCY}, {seconds:g} s after a "
            f"{warmup:g} s warm-up, generator in its own process; gen/server CPU: share of one "
            "core over the window; machine busy: share of all cores",
            ["generator", "endpoint", "requests", "errors", "req/s", "p50 ms", "p99 ms"]
            + ["gen CPU", "server CPU", "machine busy"],
            _load_rows(load_results),
        ),
        table(
            "Part 2 and 4 targets: /score against the floor (/ping of the same service) and "
            f"against the Feast + MLflow chain ({CHAIN_MODEL} only, no reasons)",
            ["check", "/score", "other", "measured ratio", "target", "met"],
            checks,
        ),
        table(
            "Part 4: chain servers, started side by side",
            ["command", "status", "ready s", "gunicorn worker boots", "error tail"],
            _chain_rows(out.get("chain_servers", {})),
        ),
        table(
            f"Part 3: /score_batch, sequential calls of different active ids "
            f"(after {BATCH_WARMUP_CALLS} warm-up calls)",
            ["call", "calls", "errors", "p50 ms", "measured p99 ms", "max ms", "target", "met"],
            _batch_rows(out.get("batch")),
        ),
        table(
            "Part 5: `clv score --all`, every active customer and dormant contact by all five "
            "champions, with every server stopped; entities/s = rows written over the "
            "scoring phase (champions and features loaded: scores, reasons when asked, "
            "output frame), or over the whole process where so labelled; met: at the median",
            ["step", "rows", "best s", "median s", "entities/s at best"]
            + ["entities/s at median", "target", "met"],
            _scoring_rows(out.get("score_all", {}), out.get("scoring", {})),
        ),
        table(
            "Where /score and /score_batch time goes in process (no HTTP, snapshot built; "
            "100 and 2 warm-up calls)",
            ["step", "ids/call", "calls", "p50 ms", "p99 ms"],
            _engine_rows(out.get("engine", {})),
        ),
    ]


def background_busy(seconds: float = 3.0) -> float:
    """Share of all cores busy while the benchmark runs nothing (other users' work)."""
    before = _machine_busy()
    time.sleep(seconds)
    return _busy_share(before, _machine_busy())


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
        home_info["background_busy_share"] = background_busy()
        out = measure(home, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if built_home is not None:
            shutil.rmtree(built_home, ignore_errors=True)
    return {
        "seed": SEED,
        "home": home_info,
        **out,
        "tables": make_tables(home_info, out, args.quick),
    }
