"""Model backends, one module per role (see base.py); weights located by registry.py."""
