"""What a stage is, and the one mechanism that decides whether its output is up to date.

A stage (ingest, preprocess, qc, adapters, train, evaluate, report) declares its name,
the config section it reads, the named inputs it needs (folders or files written by other
stages, or by the user) and the result files it writes into its output folder. ``run``
does the work; it knows nothing of fingerprints, locks or skipping: ``execute`` does that,
the same way for every stage, whether the main job or a single command calls it.

Fingerprint: the digest of the stage's name and version, its config section, the *content*
fingerprint of each input and whatever outside the repository's artifacts it depends on
(``external``: corpus files and the media they name, model weights, reference photos).
An input written by erc carries its content fingerprint in its ``manifest.json`` (the
digest of its result files); any other file or folder is hashed. So a changed upstream
output makes every stage downstream of it stale, a config change makes its own stage
stale, and nothing else does: an upstream stage recomputed to the same bytes leaves its
consumers up to date.

``manifest.json`` in every output folder records the stage, its fingerprint and what it
was made of, the result files with their sizes and sha256, the digest of those (the
content fingerprint consumers read) and the stage's summary. Results are checked to be
intact before a stage counts as up to date. Output folders are claimed (``erc.io``): erc
writes only into folders it created or was told to adopt, one run at a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from erc import __version__, io
from erc.errors import InputError, OwnershipError
from erc.fingerprint import digest, file_sha256, stat_of

MANIFEST = "manifest.json"


def read_manifest(folder: str | Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("fingerprint") else None


def _files_intact(folder: Path, files: dict[str, dict]) -> bool:
    """Every result file listed is there with its size, and its content when touched."""
    for name, entry in files.items():
        path = folder / name
        stat = stat_of(path)
        if stat is None or stat[0] != entry["size"]:
            return False
        if stat[1] != entry.get("mtime_ns") and file_sha256(path) != entry["sha256"]:
            return False
    return True


def content_fingerprint(path: str | Path) -> str:
    """The fingerprint of what an input holds: its manifest's content digest when erc
    wrote it (and it is intact), else a digest of its files (names, contents)."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        if manifest and "content" in manifest and _files_intact(path, manifest.get("files", {})):
            return manifest["content"]
        # erc's own output folders inside (runs/ in a corpus folder, features/ beside an
        # utterance table) are left out: they are not what the input holds, and a stage
        # writing there would change its own input's fingerprint with every run.
        entries = list(path.rglob("*"))  # one walk of the tree
        outputs = [p.parent for p in entries if p.name == io.MARKER and p.parent != path]
        files = sorted(p for p in entries if p.is_file() and not _bookkeeping(p.name)
                       and not any(p.is_relative_to(o) for o in outputs))
        return digest([(p.relative_to(path).as_posix(), file_sha256(p)) for p in files])
    if path.is_file():
        parent = read_manifest(path.parent)
        entry = (parent or {}).get("files", {}).get(path.name)
        if entry and _files_intact(path.parent, {path.name: entry}):
            return entry["sha256"]
        return file_sha256(path)
    raise InputError(f"{path}: no such file or folder")


def _bookkeeping(name: str) -> bool:
    return name == MANIFEST or io.is_bookkeeping(name)


@dataclass
class StageContext:
    """What ``Stage.run`` gets: its config section, its inputs and output folder, the
    manifest of its previous run (None the first time), a place for extra manifest fields
    (``record``) and ``say`` for progress lines."""
    config: Any
    inputs: dict[str, Path]
    out: Path
    previous: dict | None
    force: bool
    say: Callable[[str], None]
    record: dict = field(default_factory=dict)


@dataclass
class StageResult:
    stage: str
    out: Path
    skipped: bool
    summary: dict
    seconds: float
    manifest: dict


class Stage:
    """A step of erc's work. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str] = ""
    section: ClassVar[str | None] = None  # the RunConfig attribute it reads
    inputs: ClassVar[tuple[str, ...]] = ()  # names of the inputs it needs
    optional_inputs: ClassVar[tuple[str, ...]] = ()  # inputs it uses when given
    results: ClassVar[tuple[str, ...]] = ()  # result files (glob patterns) in its folder
    writes: ClassVar[tuple[str, ...]] = ()  # what else it writes there (Ray's run storage)
    version: ClassVar[int] = 1  # bump when what the stage computes changes
    description: ClassVar[str] = ""

    def settings(self, config: Any) -> Any:
        """What of the config the output depends on (default: all of it)."""
        return config

    def external(self, config: Any, inputs: dict[str, Path], manifest: dict | None) -> Any:
        """Fingerprints of what the stage reads besides erc's artifacts (files of the user,
        model weights); ``manifest``: the stage's previous (or just written) record."""
        return None

    def reads(self, config: Any) -> tuple[tuple[str, Any], ...]:
        """(name, path) of the files it reads besides its inputs (a corpus file, a mapping
        named in ``config``): its results must not be written over them either."""
        return ()

    def unfinished(self, config: Any, inputs: dict[str, Path], out: Path) -> str | None:
        """What of its work an interrupted (or partly invalidated) run left in ``out`` that
        the next run keeps, in words ("4 of 11 partitions done, 7 to compute"); None when
        nothing: what a dry run adds to why the stage would run."""
        return None

    @classmethod
    def outputs(cls) -> tuple[str, ...]:
        """Everything it writes into its folder (glob patterns): results, manifest, the rest."""
        return (*cls.results, MANIFEST, *cls.writes)

    def run(self, ctx: StageContext) -> dict:
        raise NotImplementedError

    def result_files(self, out: Path, ctx_record: dict) -> list[Path]:
        """The files this run produced (default: the ``results`` globs)."""
        found: list[Path] = []
        for pattern in self.results:
            found += sorted(p for p in out.glob(pattern) if p.is_file() and not _bookkeeping(p.name))
        return found

    # -- fingerprints -------------------------------------------------------------------
    def parts(self, config: Any, inputs: dict[str, Path], manifest: dict | None,
              settings: Any = None, read: dict[str, str] | None = None) -> dict:
        """The named parts of the fingerprint (kept in the manifest, so a plan can say
        which one changed); ``settings``: ``self.settings(config)`` when already worked out;
        ``read``: the inputs' fingerprints as the run found them (``input_fingerprints``)."""
        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise InputError(f"{self.name}: missing input(s) {', '.join(missing)}")
        return {"stage": [self.name, self.version],
                "config": digest(self.settings(config) if settings is None else settings),
                "inputs": input_fingerprints(inputs) if read is None else read,
                "external": digest(self.external(config, inputs, manifest))}


def input_fingerprints(inputs: dict[str, Path]) -> dict[str, str]:
    return {name: content_fingerprint(path) for name, path in sorted(inputs.items())
            if path is not None}


def fingerprint_of(parts: dict) -> str:
    return digest(parts)


def up_to_date(stage: Stage, config: Any, inputs: dict[str, Path], out: Path) -> tuple[bool, str]:
    """(current, why): whether ``out`` holds this stage's result for these inputs. The
    stage's settings are worked out first, run before or not: one it cannot take (a corpus
    of no format erc can tell) fails a dry run's plan as it would fail the run."""
    settings = stage.settings(config)
    manifest = read_manifest(out)
    if manifest is None:
        return False, "not run yet"
    if manifest.get("stage") != stage.name:
        return False, f"{out} holds the output of stage {manifest.get('stage')!r}"
    parts = stage.parts(config, inputs, manifest, settings)
    if fingerprint_of(parts) == manifest["fingerprint"]:
        if _files_intact(out, manifest.get("files", {})):
            return True, "up to date"
        return False, "its result files changed or are missing"
    old = manifest.get("parts", {})
    changed = [k for k in ("stage", "config", "external") if old.get(k) != parts[k]]
    changed += [f"input {name}" for name, value in parts["inputs"].items()
                if old.get("inputs", {}).get(name) != value]
    labels = {"stage": "erc's version of the stage", "config": "its settings",
              "external": "files it reads (corpus, media or weights)"}
    return False, "changed: " + ", ".join(labels.get(c, c) for c in changed or ["fingerprint"])


def one_stage_per_folder(out: Path, name: str) -> None:
    """OwnershipError when ``out`` holds the outputs of another of erc's stages: one
    folder, one stage, whose record is kept."""
    # the manifest's stage, or the marker's where a first run stopped before writing one
    other = (read_manifest(out) or {}).get("stage") or io.marked_stage(out)
    if other and other != name:
        raise OwnershipError(f"{out}: holds the outputs of erc's {other} stage; give "
                             f"{name} an output folder of its own")


def check_not_written_over(stage: Stage, name: str, path: Path, out: Path) -> None:
    """InputError when ``out`` is the input folder ``path`` itself, or holds the input file
    ``path`` under a name the stage writes: its results (with --overwrite) would replace
    what it reads (``erc evaluate MODEL --out MODEL`` replaced the model's metrics.json)."""
    from fnmatch import fnmatch

    source, target = path.resolve(), out.resolve()
    if source == target:
        raise InputError(f"{out}: is {stage.name}'s input {name}: its results would be written "
                         f"over what it reads; choose another output folder")
    if source.parent == target and any(fnmatch(source.name, pattern)
                                       for pattern in stage.outputs()):
        raise InputError(f"{path}: {stage.name} would write its {source.name} over this file it "
                         f"reads, in the output folder {out}; choose another output folder")


def check_not_adopting_input(name: str, path: Path, out: Path) -> None:
    """InputError when ``out`` is a folder of the user's inside the input folder ``path``
    that erc would adopt (--overwrite): marked as erc's, it is an output folder inside the
    input, which readers and fingerprints leave out, and the files of the user's there with
    it (a corpus's train/ of manifests: its rows were silently not read)."""
    root = path.resolve()
    if path.is_dir() and out.resolve() != root and root in out.resolve().parents and \
            io.check_claim(out, True):
        raise InputError(f"{out}: a folder of the {name} {path}, holding files erc did not "
                         f"write; as erc's output folder it would no longer be read as part of "
                         f"the {name}; choose a new output folder")


def check_outputs(stage: Stage | type[Stage], out: Path, overwrite: bool) -> None:
    """OwnershipError naming the user's files in ``out`` where ``stage`` writes, so that
    they stop it before it computes anything: in a folder it adopts (``overwrite``) or one
    erc adopted before, whose files of the user's stay theirs (``io.check_outputs``). A
    folder of someone else's without ``overwrite`` is refused by ``io.claim``, saying so."""
    if overwrite or io.owned(out):
        io.check_outputs(out, stage.outputs())


def execute(stage: Stage, config: Any, inputs: dict[str, str | Path | None], out: str | Path,
            *, force: bool = False, overwrite: bool = False,
            say: Callable[[str], None] = print) -> StageResult:
    """Runs ``stage`` unless ``out`` already holds its up-to-date result; writes the
    manifest. The output folder is claimed and locked before anything is read from it, so
    a second run on the same folder fails at once (BusyError) instead of reading a result
    that the first is replacing; a run refused before it wrote anything leaves no folder
    (``io.claimed``). An input it would write over, then a file of the user's where it
    writes (``check_outputs``), stops it before it computes anything: --overwrite replaces
    only what erc wrote."""
    started = time.perf_counter()
    out = Path(out)
    inputs = {name: Path(path) for name, path in inputs.items() if path is not None}
    for name, path in inputs.items():
        if not path.exists():
            raise InputError(f"{stage.name}: input {name} does not exist: {path}")
        check_not_written_over(stage, name, path, out)
    if overwrite:  # a folder it adopts: what the user keeps there may be what it reads
        for name, path in stage.reads(config):
            if path is not None and Path(path).exists():
                check_not_written_over(stage, name, Path(path), out)
                check_not_adopting_input(name, Path(path), out)
    check_outputs(stage, out, overwrite)
    if not force and io.owned(out) and io.read_only(out) and \
            up_to_date(stage, config, inputs, out)[0]:
        return _skipped(stage, out, started)  # nothing to write, so no lock to take
    with io.claimed(out, overwrite=overwrite, stage=stage.name):
        one_stage_per_folder(out, stage.name)
        if not force:
            current, _ = up_to_date(stage, config, inputs, out)
            if current:
                return _skipped(stage, out, started)
        previous = read_manifest(out)
        ctx = StageContext(config=config, inputs=inputs, out=out, previous=previous,
                           force=force, say=say)
        # The inputs as the run finds them: one another command replaces meanwhile (an
        # ingest into the corpus folder a long pass reads) leaves this result stale, to be
        # recomputed, not recorded as the new input's
        read = input_fingerprints(inputs)
        summary = stage.run(ctx)
        files = {}
        for path in stage.result_files(out, ctx.record):
            stat = stat_of(path)
            files[path.relative_to(out).as_posix()] = {"size": stat[0], "mtime_ns": stat[1],
                                                       "sha256": file_sha256(path)}
        record = {**ctx.record, "summary": summary}
        parts = stage.parts(config, inputs, record, read=read)
        manifest = {"erc": __version__, "stage": stage.name, "fingerprint": fingerprint_of(parts),
                    "parts": parts, "inputs": {k: str(v) for k, v in inputs.items()},
                    "files": files,
                    "content": digest({name: entry["sha256"] for name, entry in files.items()}),
                    "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "seconds": round(time.perf_counter() - started, 3), **record}
        io.write_json(out / MANIFEST, manifest)
    return StageResult(stage.name, out, False, summary, time.perf_counter() - started, manifest)


def _skipped(stage: Stage, out: Path, started: float) -> StageResult:
    """The result of a stage whose output ``out`` is up to date: its manifest's."""
    manifest = read_manifest(out)
    return StageResult(stage.name, out, True, manifest.get("summary", {}),
                       time.perf_counter() - started, manifest)
