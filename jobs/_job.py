"""What every job entrypoint checks first when `ray job submit` runs it.

A submitted job's driver runs inside a temporary copy of ``--working-dir`` on the head
node, so a relative output path would put the results there: on one node only, and gone
when Ray cleans up the job's runtime env. Outputs of a submitted job are therefore either
storage URIs (``s3://bucket/runs/meld/features``: erc's commands work on a local copy and
upload it, see erc/storage.py) or absolute paths on storage that every node mounts (the
NFS/EFS mount /mnt/erc of cluster.yaml, see docs/cluster.md). Run directly
(``python jobs/x.py``), paths are taken as given.
"""

from __future__ import annotations

import sys
from pathlib import PurePosixPath

OUTPUT_OPTIONS = ("--out", "--storage")


def check_outputs(argv: list[str]) -> None:
    """Exits with a message when a submitted job names a relative output path."""
    from erc.runtime import submitted_job

    if not submitted_job():
        return
    from erc.errors import printable
    from erc.redaction import redact
    from erc.storage import is_uri

    for i, arg in enumerate(argv):
        name, sep, value = arg.partition("=")
        if name not in OUTPUT_OPTIONS:
            continue
        if not sep:
            if i + 1 >= len(argv):
                continue
            value = argv[i + 1]
        if not is_uri(value) and not PurePosixPath(value).is_absolute():
            # erc's error path: one line (no credential of a mistyped URI), status 2
            print(redact(f"erc: error: {name} {printable(value)}: a submitted job needs a storage URI "
                         "(s3://...) or an absolute path on storage every node shares; a "
                         "relative one lands in the job's temporary copy of --working-dir on "
                         "the head node"), file=sys.stderr)
            sys.exit(2)

