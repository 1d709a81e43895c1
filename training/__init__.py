"""Model training: specs, fitting and probabilistic CLV models."""
