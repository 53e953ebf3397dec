"""The one reader of each artifact erc's stages pass between them.

| artifact          | written by          | read with                                           |
|-------------------|---------------------|-----------------------------------------------------|
| utterance table   | ingest, qc (kept)   | ``read_utterances(folder or utterances.parquet)``   |
| any corpus        | the user            | ``load_corpus(path)``: a table, or a corpus read     |
| feature table     | preprocess          | ``feature_parts(folder)`` (the parts its manifest   |
|                   |                     | lists), ``read_features``, ``read_vectors``,        |
|                   |                     | ``face_vectors``                                    |

A feature folder is read through its manifest: the parts of the run that wrote it, never
stray ``part-*.parquet`` files beside them (a ``--limit`` run leaves the others in place).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from erc.errors import InputError
from erc.io import owned
from erc.schema import UTTERANCE_SCHEMA, problem_reasons, said_reasons

UTTERANCES = "utterances.parquet"  # an ingest's kept rows
PROBLEMS = "problems.parquet"  # and the rows it set aside, each with its reason
FEATURES_MANIFEST = "manifest.json"
REQUIRED_UTTERANCE_COLUMNS = tuple(f.name for f in UTTERANCE_SCHEMA if f.name != "meta")


def utterance_file(path: str | Path) -> Path:
    path = Path(path)
    file = path / UTTERANCES if path.is_dir() else path
    if not file.is_file():
        stage = _stage_of(path)
        stage = None if stage == "ingest" else stage  # an ingest folder that lost its table
        what = (f"{path} holds erc's {stage} outputs, not an utterance table" if stage
                else f"{file}: no utterance table")
        raise InputError(f"{what} (give the folder `erc corpus ingest` wrote, or run it first)")
    return file


def _stage_of(folder: Path) -> str | None:
    """The erc stage whose outputs ``folder`` holds (None: none, or not a folder)."""
    from erc.stages.base import read_manifest

    return (read_manifest(folder) or {}).get("stage") if folder.is_dir() else None


@contextlib.contextmanager
def readable(file: Path) -> Iterator[None]:
    """pyarrow's error on a damaged or foreign file as a one-line InputError."""
    try:
        yield
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{file}: not a readable Parquet table ({err})") from None


def read_utterances(path: str | Path) -> pa.Table:
    """The utterance table in a folder (``utterances.parquet``) or the file itself, checked:
    the canonical columns present, ``utterance_id`` unique and non-null."""
    file = utterance_file(path)
    with readable(file):
        table = pq.read_table(file)
    missing = [c for c in REQUIRED_UTTERANCE_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"{file}: not an utterance table, it lacks {', '.join(missing)}")
    for field in UTTERANCE_SCHEMA:
        if field.name in REQUIRED_UTTERANCE_COLUMNS:
            table = _typed(table, field, file)
    ids = table.column("utterance_id")
    if ids.null_count or pc.count_distinct(ids).as_py() != table.num_rows:
        raise InputError(f"{file}: utterance_id must be unique and non-null")
    return table


def _typed(table: pa.Table, field: pa.Field, file: Path) -> pa.Table:
    """``table`` with the column of ``field`` in the schema's type: a value of the same kind
    is cast (a large string, a 64-bit turn), another kind (numbers where text belongs, a
    turn out of range) or an empty value where the schema allows none is an InputError."""
    column = table.column(field.name)
    have = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    same_kind = (pa.types.is_null(have)
                 or (pa.types.is_string(field.type)
                     and (pa.types.is_string(have) or pa.types.is_large_string(have)))
                 or (pa.types.is_integer(field.type) and pa.types.is_integer(have))
                 or (pa.types.is_floating(field.type)
                     and (pa.types.is_floating(have) or pa.types.is_integer(have))))
    if not same_kind:
        raise InputError(f"{file}: column {field.name} holds {column.type} values, not "
                         f"{field.type} (not an utterance table of erc's)")
    if column.type != field.type:
        try:
            column = column.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise InputError(f"{file}: column {field.name}: {err}") from None
        table = table.set_column(table.schema.get_field_index(field.name), field.name, column)
    if not field.nullable and column.null_count:
        raise InputError(f"{file}: column {field.name} has {column.null_count} empty values")
    return table


def _utterance_table_file(file: Path) -> bool:
    """Whether a .parquet file is an utterance table (named so, or holding its columns)
    rather than a Parquet manifest of a corpus (dialogue_id, speaker, text, ...)."""
    if file.name == UTTERANCES:
        return True
    try:
        names = pq.read_schema(file).names
    except (pa.ArrowInvalid, OSError):
        return True  # read_utterances says what is wrong with it
    return all(c in names for c in REQUIRED_UTTERANCE_COLUMNS)


def load_corpus(source: str | Path, format: str | None = None, **options) -> pa.Table:
    """An utterance table from an ingest output (folder or file), else any corpus erc
    reads (``erc.corpus.read_corpus``), for commands that accept either."""
    return load_corpus_and_problems(source, format, **options)[0]


def problems_beside(source: str | Path) -> pa.Table | None:
    """The problem table beside an utterance table (an ingest's, or QC's: the ingest's rows
    and those QC set aside); None where there is none or it is not one."""
    problems = utterance_file(source).parent / PROBLEMS
    if not problems.is_file():
        return None
    with readable(problems):
        table = pq.read_table(problems)
    if not {"split", "reason"} <= set(table.column_names):
        return None  # not erc's record: nothing known of rows set aside
    return table


def is_utterance_table(source: str | Path, format: str | None = None) -> bool:
    """Whether ``source`` is read as erc's utterance table (an ingest or QC output, or
    another stage's folder, refused when read) rather than as a corpus erc reads."""
    source = Path(source)
    return bool((source.is_file() and source.suffix == ".parquet" and format is None
                 and _utterance_table_file(source)) or (
                source.is_dir() and ((source / UTTERANCES).is_file()
                                     or (format is None and _stage_of(source)))))


def set_aside_listed(source: str | Path, format: str | None = None) -> str:
    """Where the rows of ``source`` set aside before scoring are listed one by one: the
    problems.parquet beside an utterance table; a corpus read as it is has none."""
    if is_utterance_table(source, format):
        problems = utterance_file(source).parent / PROBLEMS
        if problems.is_file():
            return f"{problems} lists each"
    return "`erc corpus ingest` lists each with its line in problems.parquet"


def load_corpus_and_problems(source: str | Path, format: str | None = None,
                             **options) -> tuple[pa.Table, pa.Table | None]:
    """``load_corpus`` and the rows set aside before it (the problem table, ``erc.schema``):
    the reader's, or those of the ``problems.parquet`` beside an ingest output's utterance
    table (None where there is none: an utterance table of another origin)."""
    source = Path(source)
    if is_utterance_table(source, format):
        table = read_utterances(source)  # another stage's folder: an error that says so
        return table, problems_beside(source)
    from erc.corpus import read_corpus

    result = read_corpus(source, format=format, options=options)
    if result.problems.num_rows:  # said, not lost: an ingest would list them in problems.parquet
        print(f"[corpus] {source}: {result.problems.num_rows} of {result.n_input} input rows set "
              f"aside by the reader ({said_reasons(problem_reasons(result.problems))}), "
              f"neither trained on nor scored; `erc corpus ingest` lists each with its line in "
              f"problems.parquet", flush=True)
    return result.utterances, result.problems


def _listed_parts(manifest: Path) -> list[str] | None:
    """The part file names a feature folder's manifest lists (None: it lists none). A
    manifest that cannot be read is an error, not a reason to guess the parts from the
    folder (stray parts of another run may lie beside them)."""
    try:
        data = json.loads(manifest.read_bytes())
    except (OSError, ValueError) as err:
        raise InputError(f"{manifest}: not a readable manifest ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{manifest}: not a manifest of `erc preprocess` (not a JSON object)")
    listed = data.get("partitions")
    if listed is None:
        return None
    if not (isinstance(listed, list) and all(
            isinstance(entry, dict) and isinstance(entry.get("file"), str) for entry in listed)):
        raise InputError(f"{manifest}: 'partitions' must be a list of entries naming a 'file'")
    names = [entry["file"] for entry in listed]
    elsewhere = [name for name in names if Path(name).name != name or name in ("", ".", "..")]
    if elsewhere:  # a part lies in its folder: a path would read another folder's files
        raise InputError(f"{manifest}: parts must be files of its folder, not {elsewhere[0]!r}")
    return names


def feature_parts(path: str | Path) -> list[Path]:
    """The part files of a feature folder, as its manifest lists them (a single Parquet
    file is its own part; a folder without a manifest: its ``part-*.parquet`` files, unless
    erc's pass writes it: then an error, not the parts it has written so far)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no feature folder (run `erc preprocess` first)")
    manifest = path / FEATURES_MANIFEST
    if manifest.is_file():
        listed = _listed_parts(manifest)
        if listed is not None:
            parts = [path / name for name in listed]
            missing = [p.name for p in parts if not p.is_file()]
            if missing:
                raise InputError(f"{path}: parts listed in its manifest are missing: "
                                 f"{', '.join(missing[:3])}")
            return parts
    elif owned(path):  # erc's pass, cut short or still writing: the parts there are some of them
        raise InputError(f"{path}: an erc preprocess run that did not finish, or is still "
                         f"running (no manifest.json); run it again to finish it")
    parts = sorted(path.glob("part-*.parquet")) or sorted(path.glob("*.parquet"))
    if not parts:
        raise InputError(f"{path}: no feature parts (run `erc preprocess` first)")
    return parts


def read_features(path: str | Path, columns: list[str] | None = None,
                  required: tuple[str, ...] = ()) -> pa.Table:
    """The feature table (every listed part, or ``columns`` of it), by utterance_id.
    ``required``: columns every part must hold (a reader that would take a column's
    absence for "nothing found" in every row, as QC would for the transcript)."""
    tables = []
    for part in feature_parts(path):
        with readable(part):
            names = pq.read_schema(part).names
        lacking = [c for c in dict.fromkeys(("utterance_id", "status", *required)) if c not in names]
        if lacking:
            raise InputError(f"{part}: not a feature table of `erc preprocess` (it lacks "
                             f"{', '.join(lacking)})")
        with readable(part):
            table = pq.read_table(part, columns=None if columns is None else
                                  [c for c in columns if c in names])
        tables.append(_as_feature_types(table, part))
    if not tables:
        raise InputError(f"{path}: no feature rows")
    table = pa.concat_tables(tables, promote_options="default").sort_by("utterance_id")
    _one_row_each(table, path)
    _one_width(table, path)
    return table


def _one_row_each(table: pa.Table, path) -> None:
    """An utterance's rows (adjacent once sorted by id) must be equal: two different ones
    leave no way to tell which to read (repr: NaN equals NaN there)."""
    ids = table.column("utterance_id").to_pylist()
    for k in range(1, len(ids)):
        if ids[k] == ids[k - 1] and repr(table.slice(k - 1, 1).to_pylist()) != repr(
                table.slice(k, 1).to_pylist()):
            raise InputError(f"{path}: utterance {ids[k]!r} has two different feature rows: "
                             "one row per utterance")


def _one_width(table: pa.Table, path,
               names=("speaker_embedding", "text_embedding", "text_layers")) -> None:
    """Every embedding of a column (``names``, and the faces' embeddings) has one width:
    vectors of two widths come from two models and cannot be compared (a check would
    silently skip whichever width it met second)."""
    ids = table.column("utterance_id").to_pylist()
    columns = [(name, table.column(name).combine_chunks(), None)
               for name in names if name in table.column_names]
    if "faces" in table.column_names:
        faces = table.column("faces").combine_chunks()
        columns.append(("faces.embedding", pc.struct_field(pc.list_flatten(faces), "embedding"),
                        pc.list_parent_indices(faces).to_numpy()))
    for name, vectors, rows in columns:
        lengths = pc.list_value_length(vectors).fill_null(0).to_numpy()
        present = np.flatnonzero(lengths)
        odd = present[lengths[present] != lengths[present[0]]] if present.size else present
        if odd.size:
            a, b = (int(k if rows is None else rows[k]) for k in (present[0], odd[0]))
            raise InputError(f"{path}: column {name!r}: the vector of {ids[b]!r} has "
                             f"{lengths[odd[0]]} values, that of {ids[a]!r} "
                             f"{lengths[present[0]]}: one model per column")


def _as_feature_types(table: pa.Table, part: Path) -> pa.Table:
    """The columns the feature schema knows, in its types: a column that cannot be read
    as its type is an error naming the part, not a crash in the stage that reads it."""
    from erc.features import FEATURE_SCHEMA

    for i, name in enumerate(table.column_names):
        if name not in FEATURE_SCHEMA.names or table.field(i).type == FEATURE_SCHEMA.field(name).type:
            continue
        want = FEATURE_SCHEMA.field(name).type
        try:
            table = table.set_column(i, pa.field(name, want), table.column(i).cast(want))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            raise InputError(f"{part}: column {name!r} holds {table.field(i).type}, a feature "
                             f"table's holds {want}") from None
    return table


def feature_models(path: str | Path) -> list[dict]:
    """The model records of a feature table (from its first part's schema)."""
    from erc.features import models_of

    first = feature_parts(path)[0]
    with readable(first):
        return models_of(pq.read_schema(first))


def read_vectors(path: str | Path, column: str) -> dict[str, np.ndarray]:
    """{utterance_id: vector} of one embedding column of a feature folder or of any
    Parquet file keyed by utterance_id; nulls and empty rows are left out. All vectors
    must have one width (``_one_width``): a model's input is sized by it. An utterance id
    twice with the same vector is kept once; with different vectors it is an error (which
    would be read?)."""
    vectors_type = pa.schema([("utterance_id", pa.string()), (column, pa.list_(pa.float32()))])
    tables = []
    for part in feature_parts(path):
        with readable(part):
            if column not in pq.read_schema(part).names:
                continue
            table = pq.read_table(part, columns=["utterance_id", column])
        try:
            tables.append(table.cast(vectors_type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            raise InputError(f"{part}: column {column!r} holds {table.schema.field(column).type}, "
                             f"not vectors of numbers") from None
    if not tables:
        return {}
    table = pa.concat_tables(tables).sort_by("utterance_id")
    _one_width(table, path, [column])
    out: dict[str, np.ndarray] = {}
    for uid, vector in zip(table.column("utterance_id").to_pylist(),
                           table.column(column).to_pylist()):
        if vector is None or not len(vector):
            continue
        vector = np.asarray(vector, dtype=np.float32)
        if uid in out and not np.array_equal(out[uid], vector, equal_nan=True):
            raise InputError(f"{path}: column {column!r}: utterance {uid!r} has two different "
                             f"vectors: one row per utterance")
        out[uid] = vector
    return out


def face_vectors(path: str | Path) -> dict[str, np.ndarray]:
    """One face vector per utterance from the ``faces`` column: the mean embedding of the
    most confident face of each sampled frame (absent when no face was found). Read as
    every feature column is (``read_features``): one row per utterance, one width."""
    out = {}
    table = read_features(path, ["utterance_id", "faces"])
    if "faces" not in table.column_names:
        return out
    for uid, faces in zip(table.column("utterance_id").to_pylist(),
                          table.column("faces").to_pylist()):
        best: dict[int, tuple[float, list]] = {}
        for face in faces or []:
            embedding = face.get("embedding")
            if not embedding or not np.all(np.isfinite(embedding)):
                continue
            frame, score = face.get("frame", 0), face.get("score") or 0.0
            if frame not in best or score > best[frame][0]:
                best[frame] = (score, embedding)
        if best:
            out[uid] = np.mean([np.asarray(e, np.float32) for _, e in best.values()], axis=0)
    return out
