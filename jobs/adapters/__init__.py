"""I/O at the edges: the Delta lake, landing files, validation results, MLflow, leases, Spark sessions."""
