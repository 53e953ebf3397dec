"""Writing outputs safely: the one atomic writer, and the rules for output folders.

Atomic: every file erc writes goes to a uniquely named temporary file in the same folder
(``.NAME.<pid>-<random>.tmp``) and is renamed over its name when complete, so a reader
never sees half a file and two writers never share a temporary name; the temporary file of
a writer killed mid-write is removed when its folder is next locked. Text files never
hold a credential: ``write_text`` passes them through ``erc.redaction.redact``.

Output folders: erc writes only into folders it owns. A folder erc creates gets a marker
file (``.erc``); a folder that already holds files and no marker belongs to someone else,
and erc refuses to write there unless told ``overwrite=True`` (the CLI's ``--overwrite``),
which adopts it. Adopting records the names the folder held (``.erc-foreign.json``): they
stay the user's, so ``--overwrite`` replaces only what erc wrote. A file of theirs where erc
writes a result stops the run with its name (``check_outputs`` before a run; the writer
and ``remove_owned`` whenever they meet one): it is never written over. Removals go through
``remove_owned``, which deletes only what erc's own records list: a folder erc writes
whole (a model) carries the list of its files (``.erc-files.json``, written by ``seal``),
and erc will not remove such a folder while it holds anything else. A lock file
(``.erc.lock``) serialises two runs on the same folder: the second fails at once with a
message naming the folder. A command checks what it would refuse (``check_claim``,
``check_outputs``) before it claims its folder, and a run refused before it wrote anything
(``claimed``) leaves no trace: the folder it created, or the marker and lock it added to
an existing one, are removed again. erc follows no link out of its folders: a link where
an output folder, its marker, lock or log goes is an error, not a way out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from erc.errors import BusyError, OwnershipError
from erc.redaction import redact

MARKER = ".erc"  # present in every output folder erc created or adopted
LOCK = ".erc.lock"
MIRROR_INDEX = ".erc-mirror.json"  # what the local copy of a storage URI holds (erc.storage)
SCRATCH_SUFFIX = ".tmp"
_SCRATCH = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp$")  # atomic_path's temporary names (pid)
FILE_INDEX = ".erc-files.json"  # in a folder erc wrote whole: the files it wrote there
FOREIGN = ".erc-foreign.json"  # in a folder erc adopted (--overwrite): the names the user had there
# A write failing for want of room: the user's to fix (erc: error: PATH: ...), not a bug
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_full_in(err: BaseException) -> int | None:
    """The errno of a write that found no room, when ``err`` is one or carries one: a Ray
    error holds the one raised in a worker process as its traceback's text, or as an
    attribute (a Ray Train controller's ``controller_failure``); else None."""
    seen: list[BaseException] = []
    while isinstance(err, BaseException) and err not in seen:
        seen.append(err)
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            return err.errno
        found = [int(n) for n in re.findall(r"\[Errno (\d+)\]", str(err))]
        if any(n in _DISK_FULL for n in found):
            return next(n for n in found if n in _DISK_FULL)
        err = getattr(err, "controller_failure", None) or err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed to ``path`` when the block succeeds,
    removed when it fails."""
    path = not_linked(path)
    _not_the_users(path)
    with _renamed_into_place(path, _remove_file) as tmp:
        yield tmp


def _remove_file(tmp: Path) -> None:
    if tmp.exists():
        tmp.unlink()


def _remove_folder(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _renamed_into_place(path: Path, remove: Callable[[Path], None]) -> Iterator[Path]:
    """What ``atomic_path`` and ``atomic_folder`` share: a scratch name beside ``path``,
    renamed to it when the block succeeds; ``remove`` takes what is left there otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _scratch_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise _naming(err, tmp, path) from None
    finally:
        remove(tmp)


def _scratch_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{SCRATCH_SUFFIX}")


def _naming(err: OSError, tmp: Path, path: Path) -> OSError:
    """``err`` naming ``path``, what erc writes: a write names no file, and the OS names the
    temporary one (a read-only file system, a folder where the file goes)."""
    if (err.errno in _DISK_FULL and err.filename is None) or \
            str(err.filename or "").startswith(str(tmp)):
        return OSError(err.errno, err.strerror, str(path))
    return err


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """``atomic_path`` for a folder erc writes whole (a model): a temporary folder beside
    ``path``, renamed to ``path`` when the block succeeds (the block removes what was
    there), removed when it fails; a writer killed meanwhile leaves it to be removed when
    the folder holding it is next locked."""
    with _renamed_into_place(not_linked(path), _remove_folder) as tmp:
        yield tmp


def copy_tree(source: str | Path, target: str | Path, skip: tuple[str, ...] = ()) -> Path:
    """Copies the folder ``source`` to ``target`` but the files named in ``skip``; the first
    error stops it as itself (``shutil.copytree`` gathers every error into one naming no
    file, so a full disk read as a bug in erc)."""
    source, target = Path(source), Path(target)
    for where, _folders, files in os.walk(source):
        here = target / Path(where).relative_to(source)
        here.mkdir(parents=True, exist_ok=True)
        for name in files:
            if name not in skip:
                try:
                    shutil.copy2(Path(where, name), here / name)
                except OSError as err:  # a full disk named by the file read: name the copy
                    if err.errno in _DISK_FULL:
                        raise OSError(err.errno, err.strerror, str(here / name)) from None
                    raise
    return target


def not_linked(path: str | Path) -> Path:
    """``path``, checked: OwnershipError when it, or a folder between it and the erc output
    folder holding it, is a link (``plots`` or Ray's ``ray`` pointing elsewhere): what erc
    writes there would land wherever the link points."""
    path = Path(path)
    link = None
    for folder in (path, *path.parents):
        if folder.is_symlink():
            link = link or folder
        elif owned(folder):
            if link is not None:
                raise OwnershipError(f"{link}: is a link; erc writes its outputs into its own "
                                     f"folders, not through links (remove the link)")
            return path
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Text files (manifests, records, reports, configs) never hold a credential."""
    return write_bytes(path, redact(text).encode("utf-8"))


def write_new_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Writes a file the user named (not in an output folder of erc's): an existing file
    is theirs, replaced only when ``overwrite``."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OwnershipError(f"{path}: exists; erc leaves it in place (choose another name, or "
                             f"pass --overwrite to replace it)")
    return write_text(path, text)


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def write_npy(path: str | Path, array) -> Path:
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # np.save would add ".npy"
        np.save(handle, array)
    return Path(path)


def copy_file(source: str | Path, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        shutil.copy2(source, tmp)
    return Path(path)


def write_parquet(path: str | Path, table) -> Path:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a file, never a URI
        pq.write_table(table, handle)
    return Path(path)


def write_parquet_set(tables: list[tuple[str | Path, Any]]) -> None:
    """Writes Parquet tables read together (an utterance table and the problem table of
    the rows set aside before it), the one readers open first last: each to its temporary
    file first, so a full disk leaves the old set in place; then that one's old file goes
    and the others take their names before it does. A run killed between the two leaves
    no table that readers open, never a new table beside an old one (the rows of two
    corpora, or a table beside problems of another that count as its rows set aside)."""
    import pyarrow.parquet as pq

    with contextlib.ExitStack() as stack:
        # entered last, renamed first: the first-read table (the list's last) renamed last
        temporaries = [stack.enter_context(atomic_path(path)) for path, _ in reversed(tables)]
        for tmp, (path, table) in zip(temporaries, reversed(tables)):
            try:
                with open(tmp, "wb") as handle:
                    pq.write_table(table, handle)
            except OSError as err:  # named here: every block it leaves would name its own file
                raise _naming(err, tmp, Path(path)) from None
        first_read = Path(tables[-1][0])
        if first_read.exists():
            first_read.unlink()


def _json_default(value: Any):
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (Path, set, frozenset)):
        return str(value) if isinstance(value, Path) else sorted(value)
    return str(value)


def path_part(value: str) -> str:
    """A value of the data (a split's name) as one component of a path: its separators and
    NULs replaced, so that ``eval-{split}`` names a folder where it is placed, never one
    below or outside it ("held/out", "../../x")."""
    return re.sub(r"[/\\\x00]", "_", value)


def is_scratch(name: str) -> bool:
    """Files that are never results: erc's temporary files mid-write and the lock (named
    as only erc names them: a user's ``draft.tmp`` is not erc's)."""
    return bool(_SCRATCH.match(name)) or name == LOCK


def is_bookkeeping(name: str) -> bool:
    """erc's own files in an output folder that are not results."""
    return is_scratch(name) or name in (MARKER, MIRROR_INDEX, FILE_INDEX, FOREIGN)


def open_no_link(path: str | Path, mode: str = "a", encoding: str | None = None):
    """``open(path, mode)`` for erc's own lock and log files, refusing a symbolic link in
    their place (which would let erc write outside its folder)."""
    flags = {"a": os.O_WRONLY | os.O_APPEND, "a+": os.O_RDWR | os.O_APPEND}[mode]
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        if Path(path).is_symlink():
            raise OwnershipError(f"{path}: is a link; erc writes its own files only, not through "
                                 f"links (remove the link and run again)") from None
        raise error
    return os.fdopen(fd, mode, encoding=encoding)


def _files(folder: Path) -> set[str]:
    """The files under ``folder`` (relative, '/'-separated), its file index left out; a
    link counts as a file, also one to a folder."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if (p.is_symlink() or not p.is_dir()) and p.name != FILE_INDEX}


def seal(folder: str | Path) -> Path:
    """Records the files of ``folder``, which erc has just written whole (a model), so that
    replacing it later removes those files and nothing a user put there."""
    folder = Path(folder)
    write_json(folder / FILE_INDEX, sorted(_files(folder)))
    return folder


# What a model folder of erc holds, read as erc's where the folder has no file index (one
# an earlier erc wrote, or a run stopped before sealing it); any other file there is a user's.
MODEL_FILES = {"config.json", "model.safetensors", "metrics.json", "training_set.npz"}


def _unlisted(folder: Path) -> list[str]:
    """Files of a folder erc replaces that it did not write: those its index does not list,
    or without an index, those no model folder of erc holds."""
    index = folder / FILE_INDEX
    if index.is_file():
        listed = set(json.loads(index.read_text()))
        unlisted = _files(folder) - listed
    else:
        unlisted = {name for name in _files(folder)
                    if name not in MODEL_FILES and not name.startswith("encoder/")}
    return sorted(name for name in unlisted if not is_scratch(name.rsplit("/", 1)[-1]))


def _some(names: list[str]) -> str:
    """The first three names, and how many more, for a message."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# -- output folders -----------------------------------------------------------------------

def owned(folder: str | Path) -> bool:
    marker = Path(folder) / MARKER
    return marker.is_file() and not marker.is_symlink()  # a link could make anyone's folder "erc's"


def check_claim(folder: str | Path, overwrite: bool = False) -> list[str]:
    """What ``claim`` refuses, checked without writing anything: OwnershipError for a link
    in place of the folder, its marker or lock, a file in place of the folder, or a folder
    of someone else's without ``overwrite``. Returns the names a folder erc would adopt
    holds (none for one it owns or would create). A command checks this, and what else it
    refuses, before it claims: a refused command leaves the folder as it found it."""
    folder = Path(folder)
    # The lock too: found only once the marker was written, it left the folder marked erc's
    for path in (folder, folder / MARKER, folder / LOCK):
        if path.is_symlink():  # writing there would write wherever the link points
            raise OwnershipError(f"{path}: is a link; erc writes its outputs into a folder, not "
                                 f"through links (name the folder itself, or remove the link)")
    if folder.exists() and not folder.is_dir():
        raise OwnershipError(f"{folder}: exists and is not a folder; choose another output")
    if owned(folder):
        return []
    foreign = _not_ercs(folder) if folder.is_dir() else []
    if foreign and not overwrite:
        raise OwnershipError(
            f"{folder}: holds files erc did not write ({_some(foreign)}); choose an empty or new "
            f"output folder, or pass --overwrite to let erc write there")
    return foreign


_MARKER_TEXT = "erc writes its outputs only into folders that carry this file.\n"
_MARKER_STAGE = "stage: "


def claim(folder: str | Path, overwrite: bool = False, stage: str | None = None) -> Path:
    """Makes ``folder`` an output folder of erc's: creates it with a marker, or checks the
    marker of an existing one. A folder holding anything but erc's marker, lock and
    scratch files, without a marker, is foreign: OwnershipError unless ``overwrite``, which
    adopts it and records what it held as the user's (``FOREIGN``). ``stage``: the stage
    whose outputs the folder is for, named in the marker before any is written
    (``marked_stage``)."""
    folder = Path(folder)
    foreign = check_claim(folder, overwrite)
    if not owned(folder):
        folder.mkdir(parents=True, exist_ok=True)
        if foreign:  # recorded before the marker: never a marked folder whose files read as erc's
            write_json(folder / FOREIGN, foreign)
        write_text(folder / MARKER, _MARKER_TEXT + (f"{_MARKER_STAGE}{stage}\n" if stage else ""))
    else:
        _forget_gone(folder)
    return folder


def read_only(folder: str | Path) -> bool:
    """Whether ``folder`` is there and erc cannot write into it (a read-only mount, disk or
    copy): a finished result there is read, not locked, since taking the lock writes."""
    folder = Path(folder)
    return folder.is_dir() and not os.access(folder, os.W_OK)


def marked_stage(folder: str | Path) -> str | None:
    """The stage ``folder``'s marker names (None: none, as in a folder an earlier erc made):
    the stage of a first run that stopped before its manifest, whose outputs (a model's
    checkpoints, some feature parts) are there."""
    marker = Path(folder) / MARKER
    if not owned(folder):
        return None
    try:
        lines = marker.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return next((line[len(_MARKER_STAGE):].strip() for line in lines
                 if line.startswith(_MARKER_STAGE)), None)


# -- the user's files in a folder erc adopted ---------------------------------------------

def _users(folder: Path) -> set[str]:
    """The names in ``folder`` that are the user's: all but erc's bookkeeping in a folder
    that is not erc's, those its record lists in one erc adopted (none in one it made)."""
    if not owned(folder):
        return set(_not_ercs(folder)) if folder.is_dir() and not folder.is_symlink() else set()
    record = folder / FOREIGN
    if not record.is_file() or record.is_symlink():
        return set()
    try:
        names = json.loads(record.read_text())
    except (OSError, ValueError):
        names = None
    if not isinstance(names, list):  # a damaged record: nothing there is known to be erc's
        return set(_not_ercs(folder))
    return {str(name) for name in names}


def _not_ercs(folder: Path) -> list[str]:
    """The names in ``folder``, a folder erc has not claimed, that are not erc's: all but
    its lock and the temporary files of a claim killed while writing its marker or record.
    Other names of erc's temporary pattern are the user's too: erc writes nothing else
    into a folder before claiming it."""
    def claims_own(name: str) -> bool:
        return name == LOCK or bool(_SCRATCH.match(name)) and \
            any(name.startswith(f".{own}.") for own in (MARKER, FOREIGN))
    return sorted(p.name for p in folder.iterdir() if not claims_own(p.name)
                  and (is_scratch(p.name) or not is_bookkeeping(p.name)))


def _forget_gone(folder: Path) -> None:
    """Drops from ``folder``'s record the names the user has since removed: erc may then
    write its own file under such a name, and replace it later."""
    record = folder / FOREIGN
    if not record.is_file() or record.is_symlink():
        return
    names = _users(folder)
    kept = sorted(n for n in names if (folder / n).exists() or (folder / n).is_symlink())
    if len(kept) != len(names):
        if kept:
            write_json(record, kept)
        else:
            record.unlink()


def _in_the_way_message(folder: Path, names: list[str]) -> str:
    if len(names) == 1:
        where, them = f"{folder / names[0]}: erc did not write this, and would write its results over it", "it"
    else:
        where, them = (f"{folder}: holds files erc did not write where it writes its results "
                       f"({_some(names)})"), "them"
    return (f"{where}; --overwrite replaces only erc's own files: move {them} out of the "
            f"folder, or choose another output folder")


def check_outputs(folder: str | Path, results: tuple[str, ...] | list[str]) -> None:
    """OwnershipError naming the user's files in ``folder`` that erc would write over or
    remove: those matching ``results`` (glob patterns of what the run writes, relative to
    the folder; a literal folder name in a pattern, such as ``model`` of ``model/*``,
    stands for that folder, which erc replaces whole). Called before a run, so that a file
    of the user's in the way stops it before it computes anything."""
    folder = Path(folder)
    users = _users(folder)
    if not users:
        return
    found: set[str] = set()
    for pattern in results:
        parts = pattern.split("/")
        for depth in range(1, len(parts) + 1):
            last = parts[depth - 1]
            literal = not any(c in last for c in "*?[")
            if depth < len(parts) and not literal:
                continue  # "*" of "*/model/*" names no path of its own
            if depth == 1 and literal:
                matches = [folder / last] if (folder / last).exists() or \
                    (folder / last).is_symlink() else []
            else:
                matches = list(folder.glob("/".join(parts[:depth])))
            found |= {m.relative_to(folder).as_posix() for m in matches
                      if m.relative_to(folder).parts[0] in users and not is_scratch(m.name)}
    # A folder found whole stands for what it holds: name it, not each file in it
    top = sorted(n for n in found if not any(n.startswith(f"{o}/") for o in found))
    if top:
        raise OwnershipError(_in_the_way_message(folder, top))


def _not_the_users(path: Path) -> None:
    """OwnershipError when ``path`` is a file of the user's (or inside a folder of theirs) in
    the erc folder that holds it (a folder erc adopted): erc never writes over it."""
    if not (path.exists() or path.is_symlink()):
        return
    for folder in path.parents:
        if owned(folder):
            relative = path.relative_to(folder)
            if relative.parts[0] in _users(folder):
                raise OwnershipError(_in_the_way_message(folder, [relative.as_posix()]))
            return


_held: set[Path] = set()  # folders whose lock this process holds (a lock nests in-process)


@contextlib.contextmanager
def locked(folder: str | Path) -> Iterator[None]:
    """Holds ``folder``'s lock for the block; BusyError when another process holds it.
    Within one process the lock nests (the main job holds its run folder's lock while the
    report stage takes it again)."""
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open_no_link(folder / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"{folder}: another erc run is writing this folder; wait for it "
                            f"to finish (or stop it) and run again") from None
        _held.add(key)
        try:
            _remove_stale_scratch(folder)
            yield
        finally:
            _held.discard(key)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_scratch(folder: Path) -> None:
    """Removes the temporary files (``atomic_path``) that writers killed mid-write left in
    ``folder`` (a run stopped with SIGKILL: its half-written part file stayed for good).
    Called under the folder's lock, so no other run writes there; a file whose process
    still lives on this machine stays, and so does what a folder of erc's inside holds
    (cleaned when that folder is locked in turn) and what the user had in a folder erc
    adopted (a file of theirs may carry a name of that pattern)."""
    users = _users(folder)
    for where, folders, files in os.walk(folder):
        if where != os.fspath(folder) and MARKER in files:
            folders[:] = []
            continue
        if where == os.fspath(folder):
            folders[:] = [name for name in folders if name not in users]
            files = [name for name in files if name not in users]
        for name in list(folders):  # a folder written whole (``atomic_folder``), cut short
            match = _SCRATCH.match(name)
            path = Path(where, name)
            if match and not path.is_symlink() and not _alive(int(match.group(1))):
                folders.remove(name)
                shutil.rmtree(path, ignore_errors=True)
        for name in files:
            match = _SCRATCH.match(name)
            path = Path(where, name)
            if match and not path.is_symlink() and not _alive(int(match.group(1))):
                with contextlib.suppress(OSError):  # never a reason to stop the run
                    path.unlink()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (this process counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def claimed(folder: str | Path, overwrite: bool = False,
            stage: str | None = None) -> Iterator[Path]:
    """Claims ``folder`` and holds its lock for the block. When the block fails having
    added nothing there but the marker and the lock file, those are removed again, and so
    are the folder and its parents when this call created them: a refused run leaves the
    folder as it found it. Anything else (a partial result, a file of someone else's)
    stays."""
    folder = Path(folder)
    created = _first_missing(folder)
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    try:
        claim(folder, overwrite=overwrite, stage=stage)
    except BaseException:
        # A claim that failed after creating the folder (a full disk as the marker is
        # written) takes it back; one of an existing folder has added nothing there.
        if created is not None and folder.is_dir() and not folder.is_symlink():
            with contextlib.suppress(OSError, BusyError, OwnershipError), locked(folder):
                _take_back(folder, before, created)
        raise
    with locked(folder):  # taken back under the lock: never a folder another run holds
        try:
            yield folder
        except BaseException:
            with contextlib.suppress(OSError):  # the run's own error is the one to report
                _take_back(folder, before, created)
            raise


def _first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist (None: it exists)."""
    missing = None
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            break
        missing = path
    return missing


def _take_back(folder: Path, before: set[str], created: Path | None) -> None:
    added = set(os.listdir(folder)) - before
    if not added <= {MARKER, LOCK, FOREIGN}:
        return
    for name in added:
        (folder / name).unlink()
    path = folder
    while created is not None:
        try:
            path.rmdir()
        except OSError:  # not empty: something else was put there meanwhile
            return
        if path == created:
            return
        path = path.parent


def remove_owned(folder: str | Path, relative: str | Path) -> None:
    """Deletes ``folder/relative`` (file or folder) when ``folder`` is erc's; the caller
    names only paths erc's own records list."""
    folder = Path(folder)
    target = (folder / relative)
    if not owned(folder):
        raise OwnershipError(f"{folder}: not an erc output folder; {relative} left in place")
    if folder.resolve() not in target.resolve().parents:
        raise OwnershipError(f"{target}: outside {folder}; left in place")
    if target.exists() or target.is_symlink():
        name = Path(relative).parts[0]
        if name in _users(folder):
            raise OwnershipError(_in_the_way_message(folder, [Path(relative).as_posix()]))
    if target.is_dir() and not target.is_symlink():
        foreign = _unlisted(target)
        if foreign:
            raise OwnershipError(f"{target}: holds files erc did not write ({_some(foreign)}); erc "
                                 f"replaces this folder, so move them out and run again")
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
