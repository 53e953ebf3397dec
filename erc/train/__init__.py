"""Training on Ray Train (loop, tasks, recipes), metrics, evaluation and the CLI commands."""
