"""Thin adapter over `xgboost.dask`: train and predict the same XGBoost booster on a
`dask.distributed` cluster, a local one (`local`) or a scheduler address in production.

The booster it returns is an ordinary `xgboost.Booster`, so the model logged to MLflow, its
calibration and the serving code are the same as after a single-process fit.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import xgboost as xgb

log = logging.getLogger(__name__)
LOCAL = "local"


@contextlib.contextmanager
def dask_client(scheduler: str, workers: int = 2, threads: int = 1) -> Iterator[Any]:
    """A client of the cluster at `scheduler`, or of a fresh local cluster of `workers`
    processes for 'local' (closed on exit)."""
    from distributed import Client, LocalCluster

    if scheduler == LOCAL:
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.WARNING,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(scheduler, timeout="20s")
    except OSError as exc:
        raise ConnectionError(f"Dask scheduler {scheduler} cannot be reached: {exc}") from exc
    with client:
        yield client


class DaskTrainer:
    """Trains boosters through `xgboost.dask` on the cluster of `client`; the rows are split
    into one partition per worker and scattered to the workers first."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.workers = max(1, len(client.scheduler_info()["workers"]))

    def _array(self, values: np.ndarray) -> Any:
        import dask.array as da

        size = math.ceil(len(values) / self.workers)
        pieces = [values[i : i + size] for i in range(0, len(values), size)]
        futures = self.client.scatter(pieces)
        blocks = [
            da.from_delayed(f, shape=piece.shape, dtype=piece.dtype)
            for f, piece in zip(futures, pieces, strict=True)
        ]
        return da.concatenate(blocks)

    def train(
        self,
        params: dict[str, Any],
        X: np.ndarray,
        y: np.ndarray,
        feature_names: list[str],
        num_rounds: int,
    ) -> xgb.Booster:
        """One booster trained across the cluster with the same parameters as a local fit."""
        import xgboost.dask as dxgb

        matrix = dxgb.DaskQuantileDMatrix(
            self.client, self._array(X), self._array(np.asarray(y, dtype=np.float64)),
            feature_names=feature_names,
        )  # fmt: skip
        cluster_params = {k: v for k, v in params.items() if k != "nthread"}
        out = dxgb.train(self.client, cluster_params, matrix, num_boost_round=num_rounds)
        log.info("trained %d rounds on %d Dask workers", num_rounds, self.workers)
        booster: xgb.Booster = out["booster"]
        booster.set_param({"nthread": params.get("nthread", 2)})
        return booster

    def predict(self, booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
        """Raw booster predictions computed on the cluster, in row order."""
        import xgboost.dask as dxgb

        result = dxgb.inplace_predict(self.client, booster, self._array(X))
        return np.asarray(result.compute())


def block_map(client: Any, function: Callable[[Any, np.ndarray], Any]) -> Callable[..., list]:
    """`function(model, matrix)` run on the cluster: the matrix is cut into one block of rows
    per worker, the model is sent once; returns the per-block results in row order."""

    def run(model: Any, matrix: np.ndarray) -> list:
        workers = max(1, len(client.scheduler_info()["workers"]))
        size = max(1, math.ceil(len(matrix) / workers))
        blocks = client.scatter([matrix[i : i + size] for i in range(0, len(matrix), size)])
        shared = client.scatter(model, broadcast=True)
        return list(client.gather([client.submit(function, shared, b) for b in blocks]))

    return run
