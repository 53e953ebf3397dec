"""The stages of a run, each resumable and accounting for every row."""
