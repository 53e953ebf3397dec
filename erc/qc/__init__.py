"""Quality control: audio-text alignment, face verification, speaker identity checks and
relabelling, per-utterance decisions and the report (``erc qc``). QC only annotates and
filters views of the utterance table; it never deletes anything.

- ``text``: transcript normalisation
- ``alignment``: corpus transcript vs ASR transcript scores and rules
- ``embeddings``: robust references and two-group splits of identity embeddings
- ``faces``: face verification against per-speaker reference faces
- ``speakers``: speaker identity checks, conflated names and aliases, relabel proposals
- ``decisions``: the pass over feature + utterance tables (``run_qc``)
- ``report``: report.json and report.html
"""
