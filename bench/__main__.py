"""Run the benchmarks: `python -m bench [NAME ...] [--quick]`.

Each `bench/bench_<name>.py` module has `run(args) -> dict`; the dict's "tables" are printed
and the whole dict is written to `bench/results/<name>.json`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from bench.common import format_table, write_results

PREFIX = "bench_"


def available() -> list[str]:
    """Names of the benchmark modules, without the `bench_` prefix."""
    folder = str(Path(__file__).resolve().parent)
    return sorted(
        info.name.removeprefix(PREFIX)
        for info in pkgutil.iter_modules([folder])
        if info.name.startswith(PREFIX)
    )


def parser(names: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run benchmarks, print their tables and write bench/results/<name>.json.",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default all: {names})"
    )
    p.add_argument(
        "--quick", action="store_true", help="shrink each benchmark (e.g. skip the largest scale)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    names = available()
    p = parser(names)
    args = p.parse_args(argv)
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; available: {names}")
    for name in args.names or names:
        module = importlib.import_module(f"bench.{PREFIX}{name}")
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        result = module.run(args)
        for data in result.get("tables", []):
            print()
            print(format_table(data))
        path = write_results(name, {"quick": args.quick, **result})
        print(f"\nwrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
