"""Studies: settings, methods, runs, the pipeline, training loop, reports and prediction."""
