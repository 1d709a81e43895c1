"""The `clv` command line and the typed settings that compose the platform's layers."""
