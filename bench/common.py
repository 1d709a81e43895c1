"""Shared benchmark helpers: isolated measurement, plain-text tables and JSON results.

Every measurement runs in a fresh subprocess so that peak memory belongs to that one run
and nothing warmed up by an earlier run (imports, caches, allocator arenas) flatters it.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"

# The child imports the target, calls it, and reports on its last stdout line.
_BOOTSTRAP = "import sys; from bench.common import _report_call; _report_call(*sys.argv[1:])"


@dataclass(frozen=True)
class Measurement:
    """One isolated run.

    `seconds` is the wall time of the measured work (the call itself for a callable, the
    whole process for a command); `process_seconds` adds interpreter start-up and imports.
    """

    seconds: float
    process_seconds: float
    peak_rss_mb: float
    result: dict[str, Any] = field(default_factory=dict)
    stdout: str = ""


def _maxrss_mb(maxrss: int) -> float:
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def peak_rss_mb() -> float:
    """Peak resident memory of the current process so far, in MiB."""
    return _maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _report_call(target: str, kwargs_json: str) -> None:
    """Child side of `run_callable`: call `module:function` and print one JSON line."""
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    kwargs = json.loads(kwargs_json)
    start = time.perf_counter()
    result = function(**kwargs)
    seconds = time.perf_counter() - start
    report = {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "result": result or {}}
    sys.stdout.write("\n" + json.dumps(report) + "\n")
    sys.stdout.flush()


def _run(argv: Sequence[str], cwd: Path) -> tuple[int, str, str, float, float]:
    """Run a process to completion; return code, stdout, stderr, wall seconds, peak RSS MiB.

    `os.wait4` gives the resource usage of exactly this child, unlike RUSAGE_CHILDREN, whose
    ru_maxrss is the maximum over every child ever waited for.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, stdout=out, stderr=err, env=_child_env())
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    return proc.returncode, stdout, stderr, seconds, _maxrss_mb(usage.ru_maxrss)


def _child_env() -> dict[str, str]:
    # The child must import `bench` (not an installed package) from the repository root.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _failure(argv: Sequence[str], code: int, stderr: str) -> RuntimeError:
    tail = "\n".join(stderr.strip().splitlines()[-20:])
    return RuntimeError(f"benchmark process {' '.join(argv)!r} exited with {code}:\n{tail}")


def run_command(argv: Sequence[str], cwd: Path = REPO) -> Measurement:
    """Run a command in a subprocess and measure its wall time and peak RSS."""
    code, stdout, stderr, seconds, rss = _run(argv, cwd)
    if code != 0:
        raise _failure(argv, code, stderr)
    return Measurement(seconds=seconds, process_seconds=seconds, peak_rss_mb=rss, stdout=stdout)


def run_callable(
    function: Callable[..., dict[str, Any] | None] | str, cwd: Path = REPO, **kwargs: Any
) -> Measurement:
    """Call an importable function in a fresh Python process and measure it.

    `function` is a module-level function or its "module:function" name; `kwargs` must be
    JSON-serialisable and so must its returned dict, which comes back as `result`.
    """
    target = function if isinstance(function, str) else _target(function)
    argv = [sys.executable, "-c", _BOOTSTRAP, target, json.dumps(kwargs)]
    code, stdout, stderr, process_seconds, rss = _run(argv, cwd)
    if code != 0:
        raise _failure(argv[:1] + [target], code, stderr)
    lines = stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"{target} printed no JSON report; stdout ended {lines[-3:]!r}") from exc
    return Measurement(
        seconds=report["seconds"],
        process_seconds=process_seconds,
        peak_rss_mb=max(rss, report["peak_rss_mb"]),
        result=report["result"],
        stdout="\n".join(lines[:-1]),
    )


def _target(function: Callable[..., Any]) -> str:
    module, name = function.__module__, function.__qualname__
    if module == "__main__" or "." in name or "<" in name:
        raise ValueError(f"{module}.{name} is not importable by name; use a module-level function")
    return f"{module}:{name}"


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """A table as plain data (JSON-ready), for `format_table`."""
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(
                f"table {title!r}: row {list(row)!r} does not have {len(columns)} cells"
            )
    return {"title": title, "columns": list(columns), "rows": [list(r) for r in rows]}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_table(data: dict[str, Any]) -> str:
    """Render a `table` as aligned plain text: numbers right-aligned, text left-aligned."""
    columns, rows = data["columns"], data["rows"]
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [
        all(_is_number(row[i]) or row[i] is None for row in rows)
        and any(_is_number(row[i]) for row in rows)
        for i in range(len(columns))
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    body = [line(r) for r in cells]
    return "\n".join([data["title"], line(columns), rule, *body])


def machine_info() -> dict[str, Any]:
    """Enough about the machine to compare results across runs."""
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 1024**3, 1)
    except ImportError:
        pass
    return info


def write_results(name: str, payload: dict[str, Any], folder: Path = RESULTS_DIR) -> Path:
    """Write `payload` with machine info to `<folder>/<name>.json` and return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    document = {"benchmark": name, "machine": machine_info(), **payload}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
