"""The preprocessing pass on Ray Data: its stages (``stages``) and the pass (``preprocess``)."""
