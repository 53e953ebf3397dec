"""Hyperparameter search on Ray Tune + Optuna: search spaces as validated YAML files
(``space``), trials that run the real training (``trial``), the resumable driver
(``driver``), the trials table, best config and plots (``results``)."""
