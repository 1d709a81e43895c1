"""MLflow "models from code" entry: MLflow runs this file to build the pyfunc model, so no
Python object is pickled into the registry."""

import mlflow

from training.pyfunc import ScoringModel

mlflow.models.set_model(ScoringModel())
