"""Job inputs and outputs at storage URIs (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``,
``file://``) through pyarrow filesystems.

erc's stages work on local folders: Parquet partitions written with atomic renames and
skipped by a re-run, reports beside their images, models exported from checkpoints. A job
given a URI works on a local copy of it:

- an input (a corpus folder, a feature table, a model) is downloaded into erc's cache, and
  downloaded again only where the remote copy changed;
- an output folder is first downloaded (so a re-run, or a job resumed on another head
  node, finds what an earlier run finished and does none of it twice), then uploaded while
  the job runs (every ``interval`` seconds, so a killed job loses at most that much) and
  once more when it ends, also when it fails. The URI is the authority: local files it no
  longer holds are dropped on download, files the job deleted are deleted there on upload.

Ray Train and Ray Tune write their checkpoints to a URI themselves (``--storage``): their
workers may run on any node. Credentials and endpoints come from the usual environment
(``AWS_*``, ``AWS_ENDPOINT_URL`` for an S3-compatible store, ``GOOGLE_APPLICATION_CREDENTIALS``)
or from the URI's query (``s3://bucket/path?endpoint_override=host:port&scheme=http``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from erc import io
from erc.errors import ErcError
from erc.redaction import redact, redact_uri

SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs", "file")
# A URI inside an argument (``finetuned:s3://b/model``, ``parquet:gs://b/f#text_embedding``):
# it ends at whitespace or at the ``#column`` suffix of a feature argument.
URI_PATTERN = re.compile(rf"(?:{'|'.join(SCHEMES)})://[^\s#]+")
_BARE_SCHEME = re.compile(rf"(?:^|[\s:])((?:{'|'.join(SCHEMES)})://)(?=$|[\s#])")  # "s3://" alone
_ANY_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)  # what an output must not be
# An output that looks like a URI erc knows but is none ("S3://b/x", "s3:/b/x", "file:/x"):
# taken as a local path it became a folder named "S3:" in the working directory.
_MISTYPED_URI = re.compile(rf"^(?:{'|'.join(SCHEMES)}):", re.IGNORECASE)
INDEX = io.MIRROR_INDEX  # what the local copy holds of each remote file
CHUNK = 8 << 20  # bytes per read when copying to or from the store
RAY_STORAGE = "ray"  # Ray Train/Tune's folder beside a job's outputs (written by Ray itself)
SETTING_OPTIONS = ("-o", "--set")  # -o KEY=VALUE: a setting of the command's recipe
# Settings that name an output folder, as --out does (output_dir, preprocess.output_dir),
# and Ray's own storage (storage, train.storage), by their last key
OUTPUT_SETTING = "output_dir"
STORAGE_SETTING = "storage"


class StorageError(ErcError, RuntimeError):
    """A URI that cannot be opened, listed or copied; the message names it (redacted)."""


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a store's operations raise: OSError, and pyarrow's own errors (its Azure
    filesystem raises a bare ArrowException when it finds no credentials)."""
    import pyarrow as pa

    return OSError, pa.ArrowException


def is_uri(text: str) -> bool:
    return bool(URI_PATTERN.fullmatch(text))


def _query_credentials(uri: str) -> str:
    """``s3://bucket/x?access_key=K&secret_key=S`` -> ``s3://K:S@bucket/x``: pyarrow takes
    S3 credentials from a URI's user part only; erc accepts them as query parameters too."""
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    found = {k: v for k, v in query if k in ("access_key", "secret_key")}
    if parts.scheme != "s3" or not found:
        return uri
    if len(found) != 2 or "@" in parts.netloc:
        raise StorageError(f"{redact(uri)}: give both access_key and secret_key, once (in the "
                           f"query or as s3://KEY:SECRET@bucket/...)")
    user = f"{quote(found['access_key'], safe='')}:{quote(found['secret_key'], safe='')}"
    rest = urlencode([(k, v) for k, v in query if k not in found], safe=":/")
    return urlunsplit((parts.scheme, f"{user}@{parts.netloc}", parts.path, rest, parts.fragment))


def open_uri(uri: str):
    """(pyarrow FileSystem, path within it) of a storage URI."""
    from urllib.parse import unquote, urlsplit

    import pyarrow as pa
    import pyarrow.fs as pafs

    # A "." or ".." step means a folder on a local disk and a plain key in a bucket; as the
    # last step it named erc's whole folder of local copies as this URI's copy (uploaded
    # there, and its other copies with it)
    if {".", ".."} & set(unquote(urlsplit(uri).path).split("/")):
        raise StorageError(f"{redact(uri)}: a storage URI with a '.' or '..' step is ambiguous; "
                           f"name the folder itself")
    try:
        return pafs.FileSystem.from_uri(_query_credentials(uri))
    except (pa.ArrowException, OSError, ValueError) as err:
        raise StorageError(f"{redact(uri)}: cannot open this storage URI ({redact(err)})") from None


def absolute(path_or_uri: str) -> str:
    """A storage URI as it is; a local path made absolute (what Ray's storage_path wants)."""
    return path_or_uri if is_uri(path_or_uri) else str(Path(path_or_uri).expanduser().resolve())


def ray_storage(path_or_uri: str):
    """(storage_path, storage_filesystem) for Ray Train and Tune: a URI is opened here and
    Ray gets the filesystem and a path with no credential in it (Ray logs its storage path
    and writes it into its records); a local path is made absolute, with no filesystem."""
    if not is_uri(path_or_uri):
        return absolute(path_or_uri), None
    fs, path = open_uri(path_or_uri)
    return path.rstrip("/"), fs


def join_uri(uri: str, name: str) -> str:
    """``uri/name``, keeping a query (``?endpoint_override=...``) at the end."""
    base, sep, query = uri.partition("?")
    return f"{base.rstrip('/')}/{name}{sep}{query}"


def beside_uri(uri: str, name: str) -> str:
    """``name`` in the folder holding ``uri`` (``s3://b/x/model``, ``eval`` -> ``s3://b/x/eval``),
    keeping a query at the end."""
    base, sep, query = uri.partition("?")
    return join_uri(base.rstrip("/").rsplit("/", 1)[0] + sep + query, name)


def remove_tree(path: str, fs=None) -> None:
    """Deletes a folder: a local path, or ``path`` within ``fs`` (``ray_storage``'s pair);
    nothing if absent. Callers check that erc's records name the folder first."""
    import pyarrow.fs as pafs

    if fs is None:
        if Path(path).exists():
            shutil.rmtree(path)
        return
    try:
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)
    except _store_errors() as err:
        raise StorageError(f"{redact(path)}: cannot delete it ({redact(err)})") from None


def _local_copy(base: Path, uri: str, folder: bool) -> Path:
    """Where the local copy of ``uri`` lives: a folder of its own per URI; a folder URI's
    copy keeps its name (``erc train`` names its run after the output folder)."""
    key = base / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    name = uri.rstrip("/").split("?")[0].rsplit("/", 1)[-1]
    name = name.rsplit("@", 1)[-1]  # a bucket's root: its name, never the credentials before it
    return key / name if folder and name and "://" not in name else key


def _is_scratch(relative: str) -> bool:
    """Files mid-write (erc writes ``.name.<id>.tmp`` then renames; a library's ``*.tmp``
    too: nothing that may be half written is uploaded), the lock of an output folder and
    the mirror's index."""
    name = relative.rsplit("/", 1)[-1]
    return name == INDEX or name.endswith(io.SCRATCH_SUFFIX) or io.is_scratch(name)


class Mirror:
    """A local folder kept in step with a folder (or one file) at a URI."""

    def __init__(self, uri: str, local: str | Path, exclude: tuple[str, ...] = ()):
        self.uri = uri.rstrip("/")
        self.exclude = exclude  # top-level folders left alone on both sides
        self.fs, self.root = open_uri(self.uri)
        self.root = self.root.rstrip("/")
        self.local = Path(local)
        self._index_path = self.local / INDEX
        self._index: dict[str, dict] = {}
        if self._index_path.is_file():
            try:
                self._index = json.loads(self._index_path.read_text())
            except ValueError:  # damaged: everything is downloaded again (the URI is the authority)
                pass
            if not isinstance(self._index, dict):
                self._index = {}
        self._lock = threading.Lock()
        self._one_file = False

    # -- the two sides -------------------------------------------------------------------
    def _remote_files(self) -> dict[str, tuple[int, int]]:
        """{relative path: (size, mtime ns)} of the files under the URI."""
        import pyarrow.fs as pafs

        try:
            top = self.fs.get_file_info(self.root)
            self._one_file = top.type == pafs.FileType.File
            if self._one_file:  # the URI names one file (an input)
                return {Path(self.root).name: (top.size, top.mtime_ns or 0)}
            infos = self.fs.get_file_info(
                pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        except _store_errors() as err:
            raise StorageError(f"{redact(self.uri)}: cannot list it ({redact(err)})") from None
        prefix = f"{self.root}/"
        return {info.path[len(prefix):]: (info.size, info.mtime_ns or 0) for info in infos
                if info.type == pafs.FileType.File and info.path.startswith(prefix)
                and self._mirrored(info.path[len(prefix):])}

    def _remote_path(self, relative: str) -> str:
        return self.root if self._one_file else f"{self.root}/{relative}"

    def _local_files(self) -> dict[str, tuple[int, int]]:
        files = {}
        if self.local.is_dir():
            for path in self.local.rglob("*"):
                relative = path.relative_to(self.local).as_posix()
                if path.is_file() and self._mirrored(relative):
                    stat = path.stat()
                    files[relative] = (stat.st_size, stat.st_mtime_ns)
        return files

    def _mirrored(self, relative: str) -> bool:
        return not _is_scratch(relative) and relative.split("/", 1)[0] not in self.exclude

    def _save_index(self) -> None:
        io.write_text(self._index_path, json.dumps(self._index))

    # -- download ------------------------------------------------------------------------
    def pull(self) -> int:
        """Makes the local folder hold what the URI holds; returns the files downloaded."""
        with self._lock:
            remote = self._remote_files()
            local = self._local_files()
            fetched = 0
            for relative, (size, mtime) in remote.items():
                known = self._index.get(relative)
                if (known and relative in local and list(local[relative]) == known["local"]
                        and [size, mtime] == known["remote"]):
                    continue  # the local copy is this version of the remote file
                self._download(relative)
                stat = (self.local / relative).stat()
                self._index[relative] = {"local": [stat.st_size, stat.st_mtime_ns],
                                         "remote": [size, mtime]}
                fetched += 1
            for relative in set(local) - set(remote):  # the URI is the authority
                (self.local / relative).unlink()
                self._index.pop(relative, None)
            for relative in set(self._index) - set(remote):
                del self._index[relative]
            self._save_index()
            return fetched

    def _download(self, relative: str) -> None:
        target = self.local / relative
        root = self.local.resolve()
        if root not in target.resolve().parents:  # a key such as "a/../../x" must not escape
            raise StorageError(f"{redact(self.uri)}: the object key {relative!r} would be "
                               f"written outside the local copy {self.local}; refusing it")
        try:
            with io.atomic_path(target) as tmp, open(tmp, "wb") as dst, \
                    self.fs.open_input_stream(self._remote_path(relative)) as src:
                shutil.copyfileobj(src, dst, CHUNK)
        except _store_errors() as err:
            raise StorageError(f"{redact(self.uri)}/{relative}: download failed ({redact(err)})") from None

    # -- upload --------------------------------------------------------------------------
    def push(self) -> int:
        """Makes the URI hold what the local folder holds; returns the files uploaded or
        deleted there."""
        with self._lock:
            local = self._local_files()
            changed = 0
            for relative, stat in sorted(local.items()):
                known = self._index.get(relative)
                if known and list(stat) == known["local"]:
                    continue
                try:
                    remote = self._upload(relative)
                except FileNotFoundError:  # deleted by the job since the listing
                    continue
                # The stat taken before reading: a file written again meanwhile differs
                # from it and goes up again next time.
                self._index[relative] = {"local": list(stat), "remote": list(remote)}
                changed += 1
            for relative in sorted(set(self._index) - set(local)):
                try:
                    self.fs.delete_file(f"{self.root}/{relative}")
                except FileNotFoundError:
                    pass
                except _store_errors() as err:
                    raise StorageError(f"{redact(self.uri)}/{relative}: delete failed ({redact(err)})") from None
                del self._index[relative]
                changed += 1
            self._save_index()
            return changed

    def _upload(self, relative: str) -> tuple[int, int]:
        import pyarrow.fs as pafs

        remote = f"{self.root}/{relative}"
        with open(self.local / relative, "rb") as src:  # FileNotFoundError: deleted since
            try:
                if isinstance(self.fs, pafs.LocalFileSystem):  # object stores have no folders
                    self.fs.create_dir(remote.rsplit("/", 1)[0], recursive=True)
                with self.fs.open_output_stream(remote) as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                info = self.fs.get_file_info(remote)
            except _store_errors() as err:
                raise StorageError(f"{relative}: upload to {redact(self.uri)} failed ({redact(err)})") from None
        return info.size, info.mtime_ns or 0


def stage_input(uri: str, cache: Path) -> Path:
    """A local copy of the file or folder at ``uri`` (downloaded where it changed)."""
    import pyarrow.fs as pafs

    fs, path = open_uri(uri)
    try:
        kind = fs.get_file_info(path.rstrip("/")).type
    except _store_errors() as err:
        raise StorageError(f"{redact(uri)}: cannot reach it ({redact(err)})") from None
    if kind == pafs.FileType.NotFound:
        raise StorageError(f"{redact(uri)}: no such file or folder")
    is_file = kind == pafs.FileType.File
    mirror = Mirror(uri, _local_copy(cache / "inputs", uri, folder=not is_file))
    fetched = mirror.pull()
    if fetched:
        print(f"[storage] {redact(uri)}: {fetched} file(s) downloaded to {mirror.local}", flush=True)
    return mirror.local / Path(path.rstrip("/")).name if is_file else mirror.local


def pulled_output(uri: str, cache: Path, exclude: tuple[str, ...] = ()) -> Mirror:
    """The local copy of an output folder at ``uri``, filled from it (what a run there has
    written so far); nothing goes back."""
    mirror = Mirror(uri, _local_copy(cache / "staging", uri, folder=True), exclude)
    fetched = mirror.pull()
    print(f"[storage] {redact(uri)}: working in {mirror.local}"
          + (f" ({fetched} earlier file(s) downloaded)" if fetched else ""), flush=True)
    return mirror


@contextmanager
def staged_output(uri: str, cache: Path, interval: float = 30.0,
                  exclude: tuple[str, ...] = ()) -> Iterator[Path]:
    """A local folder for an output at ``uri``: filled from the URI first, uploaded every
    ``interval`` seconds while the body runs and once more when it ends. ``exclude``:
    top-level folders of the URI that something else writes there (Ray's storage)."""
    mirror = pulled_output(uri, cache, exclude)
    stop = threading.Event()

    def upload_periodically() -> None:
        while not stop.wait(interval):
            try:
                mirror.push()
            except StorageError as err:  # try again next time; the last push reports it
                print(f"[storage] {redact(err)}", flush=True)

    uploader = threading.Thread(target=upload_periodically, name=f"upload {redact(uri)}", daemon=True)
    uploader.start()
    try:
        yield mirror.local
    finally:
        stop.set()
        uploader.join()
        changed = mirror.push()
        print(f"[storage] {redact(uri)}: up to date ({changed} file(s) uploaded or deleted)", flush=True)


def run_with_uris(main: Callable[[list[str]], int], argv: list[str], cache: Path,
                  output_options: tuple[str, ...] = ("--out",),
                  storage_option: str | None = None, interval: float = 30.0) -> int:
    """Runs ``main`` on ``argv`` with every storage URI in it replaced by a local copy:
    the values of ``output_options`` are staged outputs, every other URI an input. The
    value of ``storage_option`` (Ray's own storage) stays a URI; when an output is a URI
    and that option is not given, it is set to ``<output URI>/ray`` so that checkpoints go
    straight to the store from whichever node writes them. A setting given as ``-o
    KEY=VALUE`` is read the same way: an ``output_dir`` is an output (``erc run -o
    output_dir=URI`` as ``--out URI``), with ``storage_option`` a ``storage`` is Ray's own."""
    outputs: list[str] = []
    primary: list[bool] = []  # whether each output is the command's own (Ray's storage goes beside it)
    storage_settings: list[str] = []

    def setting(value: str) -> str:
        """The value of ``-o KEY=VALUE`` with a URI in it staged as what the setting is."""
        key, sep, rest = value.partition("=")
        *sections, leaf = key.strip().replace("-", "_").split(".")
        if sep and leaf == OUTPUT_SETTING:
            staged = localise(output_options[0], rest)
            if is_uri(rest):
                primary[-1] = not sections
            return f"{key}={staged}"
        if sep and leaf == STORAGE_SETTING and storage_option:
            storage_settings.append(key)
            return f"{key}={localise(storage_option, rest)}"
        return localise(None, value)

    def localise(option: str | None, value: str) -> str:
        bare = _BARE_SCHEME.search(value)
        if bare:
            raise StorageError(f"{bare.group(1)}: a storage URI needs a bucket or host and a "
                               f"path (e.g. s3://bucket/runs/x)")
        foreign = _ANY_SCHEME.match(value) if option in output_options else None
        if foreign and foreign.group(1).lower() not in SCHEMES:
            raise StorageError(f"{redact_uri(value)}: erc writes to a local folder or to "
                               f"{', '.join(s + '://' for s in SCHEMES)}, not {foreign.group(1)}://")
        if option in output_options and _MISTYPED_URI.match(value) and not is_uri(value):
            raise StorageError(f"{redact_uri(value)}: not a storage URI; write it as "
                               f"{value.split(':', 1)[0].lower()}://... (a lower-case scheme and "
                               f"two slashes)")
        if option in output_options and is_uri(value):
            outputs.append(value)
            primary.append(True)
            return f"\0output{len(outputs) - 1}"
        if option is not None and option == storage_option:
            return value
        return URI_PATTERN.sub(lambda m: str(stage_input(m.group(0), cache)), value)

    local_argv: list[str] = []
    pending = None  # an option whose value is the next argument
    for arg in argv:
        if pending:
            local_argv.append(setting(arg) if pending in SETTING_OPTIONS else localise(pending, arg))
            pending = None
        elif arg in (*output_options, *SETTING_OPTIONS, storage_option):
            local_argv.append(arg)
            pending = arg
        elif arg.startswith("--") and "=" in arg:
            name, _, value = arg.partition("=")
            local_argv.append(f"{name}={setting(value) if name in SETTING_OPTIONS else localise(name, value)}")
        else:
            local_argv.append(localise(None, arg))
    given_storage = storage_settings or storage_option and any(
        a == storage_option or a.startswith(f"{storage_option}=") for a in argv)
    beside = primary.index(True) if True in primary else None  # the output Ray's storage goes beside
    ray_storage = beside is not None and storage_option and not given_storage
    if ray_storage:
        local_argv += [storage_option, join_uri(outputs[beside], RAY_STORAGE)]
    with ExitStack() as stack:
        for number, uri in enumerate(outputs):
            exclude = (RAY_STORAGE,) if ray_storage and number == beside else ()
            local = stack.enter_context(staged_output(uri, cache, interval, exclude))
            local_argv = [a.replace(f"\0output{number}", str(local)) for a in local_argv]
        code = main(local_argv)
    for uri in outputs:
        print(f"results: {redact(uri)}", flush=True)
    return code
