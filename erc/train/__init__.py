"""Training on Ray Train: the loop, the tasks it trains, data and vectors, fitting a recipe,
metrics and evaluation."""
