"""Model specs, training sets, tuning, calibration, evaluation and the generic training job."""
