"""Write a simulated world to disk, all or nothing, and advance it by whole months."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from simulator.world import START, World, simulate

MANIFEST = "_manifest.json"


@dataclass(frozen=True)
class Manifest:
    """What produced a raw folder: enough to re-create or advance the same world."""

    seed: int
    scale: float
    months: int
    start: str
    as_of: str
    rows: dict[str, int]

    @classmethod
    def read(cls, raw_dir: Path) -> Manifest:
        path = raw_dir / MANIFEST
        if not path.exists():
            raise FileNotFoundError(
                f"{raw_dir} has no {MANIFEST}: it was not written by `clv simulate`"
            )
        return cls(**json.loads(path.read_text()))


def as_of(months: int) -> pd.Timestamp:
    """The last cutoff (end of history) of a world simulated for `months` months."""
    return START + pd.DateOffset(months=months)


def _stage(tables: dict[str, pd.DataFrame], target: Path, extra: dict | None) -> Path:
    """Write parquet files into a hidden sibling folder of `target` and return it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)
    try:
        for name, frame in tables.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False, engine="pyarrow")
        if extra is not None:
            (tmp / MANIFEST).write_text(json.dumps(extra, indent=2, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _swap(staged: Path, target: Path) -> None:
    """Move a staged folder into place (the old one is removed only after the move)."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staged.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def holds_data(folder: Path) -> bool:
    """True when a folder exists and has any file in it."""
    return folder.exists() and any(folder.iterdir())


def write_world(world: World, raw_dir: Path, truth_dir: Path, force: bool = False) -> Manifest:
    """Write raw tables and truth; refuse to replace existing data unless `force`."""
    for folder in (raw_dir, truth_dir):
        if holds_data(folder) and not force:
            raise FileExistsError(f"{folder} already holds data; pass --force to replace it")
    manifest = Manifest(
        seed=world.seed,
        scale=world.scale,
        months=world.months,
        start=str(START.date()),
        as_of=str(as_of(world.months).date()),
        rows={name: len(frame) for name, frame in world.raw.items()},
    )
    staged = []
    try:
        staged.append((_stage(world.truth, truth_dir, None), truth_dir))
        staged.append((_stage(world.raw, raw_dir, manifest.__dict__), raw_dir))
    except BaseException:
        for folder, _ in staged:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    for folder, target in staged:
        _swap(folder, target)
    return manifest


def advance_world(raw_dir: Path, truth_dir: Path, months: int) -> Manifest:
    """Extend the world in `raw_dir` by `months` months, keeping its history unchanged.

    Every month of the simulation draws from its own seeded stream, so re-running the same
    world for longer reproduces the old months exactly and only appends new events.
    """
    if months < 1:
        raise ValueError(f"--advance must be at least 1 month, got {months}")
    old = Manifest.read(raw_dir)
    world = simulate(months=old.months + months, scale=old.scale, seed=old.seed)
    return write_world(world, raw_dir, truth_dir, force=True)


def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Every parquet table of a folder, by name."""
    if not folder.exists():
        raise FileNotFoundError(f"{folder} does not exist; run `clv simulate` first")
    return {p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}
