"""What a fusion model reads: a feature spec (per modality, where its vectors come from)
and the per-utterance vectors it names.

- ``text_features``: a fine-tuned text model's 768/384-d utterance vectors, cached as
  Parquet under the erc state dir (keyed by the model's weights and the table);
- ``frozen_text_features``: sentence-transformers embeddings of the transcripts (the cheap
  option, also the floor baseline's input), cached under the erc state dir;
- feature table columns and faces (``erc.artifacts``), optionally through an adapter;
- ``feature_spec``: the spec of ``erc train fusion``'s inputs (``FusionInputs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from erc import io
from erc.backends.base import pick_device
from erc.errors import ConfigError, ErcError, InputError
from erc.fingerprint import digest, table_digest
from erc.recipes import FusionInputs
from erc.settings import expand_path
from erc.train.data import build_text_data


def table_fingerprint(table: pa.Table,
                      columns: tuple[str, ...] = ("utterance_id", "speaker", "text", "emotion",
                                                  "split")) -> str:
    """The cache key of a table's vectors (by default its ids, speakers, texts, labels and
    splits)."""
    return table_digest(table, columns)[:16]


def text_features(model_dir: str | Path, table: pa.Table, splits: list[str] | None = None,
                  batch_size: int = 64, cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """{utterance_id: vector} of a fine-tuned text model over ``splits`` (default all),
    cached under the erc state dir by the model's folder and weights and the table. Not in
    the model folder: that is another stage's output (a consumer adding files there made
    its fingerprint change), and split names are the corpus's text, no part of a file name."""
    import torch

    from erc.fingerprint import stat_of
    from erc.home import state_dir
    from erc.models.checkpoint import WEIGHTS, load_model_of
    from erc.models.text import load_tokenizer
    from erc.train.tasks import TextTask

    model_dir = Path(model_dir)
    splits = splits or sorted(set(table.column("split").to_pylist()))
    cache_dir = Path(cache_dir) if cache_dir else state_dir() / "cache" / "finetuned_text"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = digest(str(model_dir.resolve()), stat_of(model_dir / WEIGHTS), table_fingerprint(table),
                 splits)[:24]
    cache = cache_dir / f"{key}.parquet"
    if cache.is_file():
        t = pq.read_table(cache)
        return {u: np.asarray(v, np.float32) for u, v in
                zip(t.column("utterance_id").to_pylist(), t.column("text_embedding").to_pylist())}
    device = torch.device(pick_device())
    model = load_model_of(model_dir, "text", "a fine-tuned text model (the model of `erc train "
                                             "text`)", device)
    cfg = model.config
    tokenizer = load_tokenizer(cfg.encoder)
    data = build_text_data(table, tokenizer, cfg, roles={s: s for s in splits}, labels=cfg.labels)
    task = TextTask({"model": cfg.to_dict()}, data, None)
    ids, vectors = [], []
    for split in splits:
        emb, _ = task.embed_and_predict(model, split, device, batch_size)
        ids.extend(data.splits[split]["ids"])
        vectors.extend(emb)
    io.write_parquet(cache, pa.table({"utterance_id": ids,
                                      "text_embedding": [v.tolist() for v in vectors]}))
    return dict(zip(ids, vectors))


def frozen_text_features(model_path: str, table: pa.Table, batch_size: int = 64,
                         cache_dir: str | Path | None = None,
                         layers: int = 1) -> dict[str, np.ndarray]:
    """Sentence-transformers embeddings of each transcript (no context, encoder frozen;
    ``layers`` > 1: its last layers pooled, ``erc.backends.text.layer_vectors``), cached by
    the utterances' ids and texts only (a fold that reassigns splits reuses them)."""
    from erc.backends.text import encode_texts
    from erc.home import state_dir

    cache_dir = Path(cache_dir) if cache_dir else state_dir() / "cache" / "text_embeddings"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = digest(str(Path(model_path).resolve()), table_fingerprint(table, ("utterance_id", "text")))[:16]
    cache = cache_dir / f"{Path(model_path).name}{'' if layers == 1 else f'-last{layers}'}-{key}.parquet"
    if cache.is_file():
        t = pq.read_table(cache)
        return {u: np.asarray(v, np.float32) for u, v in
                zip(t.column("utterance_id").to_pylist(), t.column("text_embedding").to_pylist())}
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(model_path), device=pick_device())
    except (OSError, ValueError) as err:  # transformers' errors on a folder that is no model
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{model_path}: not a sentence-transformers model ({first})") from None
    ids = table.column("utterance_id").to_pylist()
    texts = [t or "" for t in table.column("text").to_pylist()]
    vectors = encode_texts(model, texts, layers, batch_size, normalize=False)
    io.write_parquet(cache, pa.table({"utterance_id": ids,
                                      "text_embedding": [v.tolist() for v in vectors]}))
    return dict(zip(ids, vectors))


def resolve_text_encoder(name_or_path: str) -> str:
    """A text encoder folder: a path as given, else a sentence-transformers model name found
    by the model registry (registry package, erc's model cache, Hugging Face cache)."""
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser().resolve())
    from erc.backends.base import ModelSpec
    from erc.backends.registry import resolve

    spec = resolve(ModelSpec(role="text", backend="sentence-transformers", name=name_or_path),
                   download=False)
    return str(spec.path)


def load_features(spec: Mapping[str, dict], table: pa.Table,
                  split: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per-modality {utterance_id: vector} from a feature spec (JSON-able, stored with the
    fusion model so evaluation rebuilds the same inputs):

    - ``{"kind": "finetuned", "path": MODEL_DIR}``: a fine-tuned text model's vectors;
    - ``{"kind": "sentence-transformers", "path": MODEL, "layers": N}``: frozen transcript
      embeddings (N > 1: the encoder's last N layers pooled; a spec without "layers", saved
      before it, reads the sentence vector);
    - ``{"kind": "parquet", "path": FEATURES, "column": "speaker_embedding"}``: a column of
      the feature table (or any Parquet keyed by utterance_id);
    - ``{"kind": "faces", "path": FEATURES}``: per-utterance face vector (``face_vectors``);

    each optionally with ``"adapter": ADAPTER_DIR`` (identity -> adapted 128-d).

    ``split``: the one split read (evaluation), whose turns alone get text vectors a
    feature folder lacks computed (``with_pass_text_vectors``); None: every split."""
    return adapt_features(raw_features(spec, table, split), spec)


def raw_features(spec: Mapping[str, dict], table: pa.Table,
                 split: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per-modality {utterance_id: vector} of ``spec`` before any adapter (finite rows);
    ``split``: as for ``load_features``."""
    from erc.artifacts import face_vectors, read_vectors

    out = {}
    for modality, item in spec.items():
        kind = item["kind"]
        if kind == "finetuned":
            vectors = text_features(item["path"], table)
        elif kind == "sentence-transformers":  # a spec saved before "layers": the sentence vector
            vectors = frozen_text_features(item["path"], table, layers=item.get("layers", 1))
        elif kind == "parquet":
            column = item.get("column", f"{modality}_embedding")
            vectors = with_pass_text_vectors(item["path"], column, table,
                                             read_vectors(item["path"], column), split)
        elif kind == "faces":
            vectors = face_vectors(item["path"])
        else:
            raise ConfigError(f"unknown feature kind {kind!r} for {modality}")
        out[modality] = {u: v for u, v in vectors.items() if np.all(np.isfinite(v))}
    return out


PASS_TEXT_COLUMNS = ("text_embedding", "text_layers")  # what the pass's text stage writes
CHECKED_ROWS = 4  # rows of the pass that the model is checked on before it fills in others
PASS_TOLERANCE = 1e-4  # largest difference from the pass's own vectors still read as equal
_FILLED: dict[str, np.ndarray] = {}  # digest of (folder, column, model, texts) -> their vectors


def with_pass_text_vectors(folder: str | Path, column: str, table: pa.Table,
                           vectors: dict[str, np.ndarray],
                           split: str | None = None) -> dict[str, np.ndarray]:
    """``vectors`` (a column of ``folder``) and, when that folder is an ``erc preprocess``
    output and ``column`` its text vectors, those of the utterances of ``table`` with a
    transcript that the pass never saw (a test file placed beside the corpus after
    ``erc run``): computed with the text model its manifest records, as the pass computed
    them. Without them every such turn was read without its text. The model is first run on
    a few of the pass's own rows; if it does not give their vectors back (another model
    under that name, other options) nothing is filled in and it says why. ``split``: the
    one split whose utterances are filled in (None: all)."""
    from erc.stages.base import read_manifest

    manifest = read_manifest(folder) if Path(folder).is_dir() else None
    if column not in PASS_TEXT_COLUMNS or not manifest or manifest.get("stage") != "preprocess":
        return vectors
    from erc.artifacts import feature_parts

    ids = table.column("utterance_id").to_pylist()
    texts = {u: t for u, t in zip(ids, table.column("text").to_pylist())
             if isinstance(t, str) and t.strip()}
    missing = [u for u, s in zip(ids, table.column("split").to_pylist())
               if u in texts and u not in vectors and split in (None, s)]
    if not missing:  # the usual case: the folder's ids are not read
        return vectors
    # rows the pass never saw; one it saw without a vector (its text stage failed) stays so
    seen = {u for part in feature_parts(folder)
            for u in pq.read_table(part, columns=["utterance_id"]).column(0).to_pylist()}
    missing = [u for u in missing if u not in seen]
    if not missing:
        return vectors
    record = next((m for m in manifest.get("models", []) if m.get("role") == "text"), None)
    layers = int((manifest.get("settings") or {}).get("text_layers") or 1)
    # the longest of its rows: a shorter max_seq_length of the pass's (an option its
    # manifest does not record) shows on them, not on the first ones ("What?")
    checked = sorted((u for u in texts if u in vectors), key=lambda u: -len(texts[u]))[:CHECKED_ROWS]
    said = f"{len(missing):,} utterances with a transcript are not in the feature folder {folder}"
    if record is None or not checked:
        print(f"[features] {said}; not computed: the pass records "
              + ("no text model" if record is None else "no row of this corpus to check it on"))
        return vectors
    # an ensemble's models read the same folder: its turns are computed once, not per model
    key = digest(str(Path(folder).resolve()), column, record, layers,
                 [(u, texts[u]) for u in checked + missing])
    try:
        got = _FILLED.get(key)
        if got is None:
            got = _FILLED[key] = _pass_text_model(record, column, layers)(
                [texts[u] for u in checked + missing])
    except ErcError as err:  # its weights are not here (another machine's run): said, not fatal
        print(f"[features] {said}; not computed: {err}")
        return vectors
    difference = float(max(np.abs(got[i] - vectors[u]).max() if got[i].shape == vectors[u].shape
                           else np.inf for i, u in enumerate(checked)))
    if not difference <= PASS_TOLERANCE:
        print(f"[features] {said}; not computed: {record['name']} does not give back the "
              f"pass's vectors of {len(checked)} of its rows (largest difference "
              f"{difference:.2g}); preprocess this corpus and pass its folder with --features")
        return vectors
    print(f"[features] {said} (placed after its pass): their {column} computed with "
          f"{record['name']} as the pass computed them (checked on {len(checked)} of its rows)")
    return {**vectors, **dict(zip(missing, got[len(checked):]))}


def _pass_text_model(record: Mapping, column: str, layers: int):
    """``texts -> vectors`` of ``column`` as the pass's text stage computes them, with the
    model of the manifest's ``record`` (its path when it came from one, else by name)."""
    from erc.backends.base import ModelSpec
    from erc.backends.registry import load_backend

    source = str(record.get("source") or "")
    spec = ModelSpec(role="text", backend=record["backend"], name=record["name"],
                     path=source[len("path:"):] if source.startswith("path:") else None)
    backend = load_backend(spec)
    if column == "text_layers":
        return lambda texts: backend.embed_layers(texts, layers)
    return backend.embed


def require_vectors(spec: Mapping[str, dict], features: Mapping[str, dict]) -> None:
    """InputError naming the source of a modality the user asked for that yielded no
    vector at all (e.g. a misspelt ``#column``): a model cannot learn from it."""
    for modality, vectors in features.items():
        if not vectors:
            item = spec[modality]
            column = f" (column {item['column']!r})" if "column" in item else ""
            raise InputError(f"{item['path']}: no finite {modality} vectors{column}")


def adapt_features(raw: Mapping[str, dict], spec: Mapping[str, dict],
                   adapters: Mapping | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``raw`` features through the adapters of ``spec`` (or the loaded ``adapters`` given
    per modality, e.g. resized ones); modalities without an adapter pass unchanged."""
    from erc.models.adapters import adapt_vectors
    from erc.models.checkpoint import load_model_of

    out = {}
    for modality, vectors in raw.items():
        path = spec.get(modality, {}).get("adapter")
        adapter = (adapters or {}).get(modality)
        if adapter is None and path:
            adapter = load_model_of(path, "adapter", f"a {modality} adapter")
        if adapter is not None and vectors:
            ids = list(vectors)
            vectors = dict(zip(ids, adapt_vectors(adapter, np.stack([vectors[u] for u in ids]))))
        out[modality] = vectors
    return out


def resize_adapters(spec: Mapping[str, dict], hidden: int | None, out_dim: int | None,
                    out_dir: str | Path | None = None) -> tuple[dict, dict]:
    """(spec, adapters): the adapters of ``spec`` with sizes ``hidden`` / ``out_dim`` (None:
    their own), retrained where the sizes differ (``resized_adapter``). With ``out_dir``
    retrained ones are saved to ``out_dir/<modality>/model`` and the returned spec points
    there, so the model trained on them rebuilds the same inputs when evaluated."""
    from erc.models.adapters import TRAINING_SET, resized_adapter
    from erc.models.checkpoint import save_model

    spec = {m: dict(item) for m, item in spec.items()}
    adapted = [m for m, item in spec.items() if item.get("adapter")]
    if not adapted:
        raise ConfigError("adapter sizes were given but no modality has an adapter "
                          "(--speaker-adapter / --face-adapter)")
    adapters = {}
    for modality in adapted:
        source = Path(spec[modality]["adapter"])
        adapters[modality], retrained = resized_adapter(source, hidden, out_dim)
        if out_dir is not None and retrained:
            saved_as = save_model(Path(out_dir) / modality / "model", adapters[modality],
                                  metrics={"retrained_from": str(source.resolve())})
            io.copy_file(source / TRAINING_SET, saved_as / TRAINING_SET)
            io.seal(saved_as)
            spec[modality]["adapter"] = str(saved_as.resolve())
    return spec, adapters


def parse_feature(text: str, modality: str, flag: str | None = None, layers: int = 1) -> dict:
    """``finetuned:DIR`` | ``st:MODEL`` | ``parquet:PATH[#column]`` -> a feature spec item
    (``flag``: the option errors name, ``--MODALITY`` by default; ``layers``: how many of a
    frozen ``st:`` encoder's last layers its vectors read, ``FusionInputs.text_layers``)."""
    flag = flag or f"--{modality}"
    kind, sep, rest = text.partition(":")
    if not sep:
        raise ConfigError(f"{flag}: expected KIND:VALUE (finetuned:DIR, st:MODEL, "
                          f"parquet:PATH[#column]), got {text!r}")
    if kind == "finetuned":
        return {"kind": "finetuned", "path": str(Path(expand_path(rest)).resolve())}
    if kind in ("st", "sentence-transformers"):
        return {"kind": "sentence-transformers", "path": resolve_text_encoder(rest), "layers": layers}
    if kind == "parquet":
        path, _, column = rest.partition("#")
        return {"kind": "parquet", "path": str(Path(expand_path(path)).resolve()),
                "column": column or f"{modality}_embedding"}
    raise ConfigError(f"{flag}: unknown feature kind {kind!r} (finetuned, st, parquet)")


def feature_spec(inputs: FusionInputs) -> dict:
    """The feature spec of ``erc train fusion`` / ``erc tune fusion``: text tokens, and the
    speaker and face vectors of a feature folder (through their adapters) unless text only."""
    # what reads the feature folder, given where none is read: each was ignored silently
    folder_options = [flag for flag, value in (("--speaker-adapter", inputs.speaker_adapter),
                                               ("--face-adapter", inputs.face_adapter),
                                               ("--drop", inputs.drop)) if value]
    if inputs.text_only and (inputs.features or folder_options):
        raise ConfigError(f"--text-only reads no feature folder: leave out "
                          f"{', '.join(['--features'] * bool(inputs.features) + folder_options)}")
    if folder_options and not inputs.features:
        raise ConfigError(f"{', '.join(folder_options)}: the speaker and face vectors come from a "
                          f"feature folder: give it with --features")
    spec = {"text": parse_feature(inputs.text, "text", layers=inputs.text_layers)}
    if inputs.second_text:  # read as one more token of each turn, beside the first
        spec["text2"] = parse_feature(inputs.second_text, "text2", "--second-text",
                                      layers=inputs.text_layers)
    if inputs.features and not inputs.text_only:
        path = str(Path(inputs.features).resolve())
        spec["speaker"] = {"kind": "parquet", "path": path, "column": "speaker_embedding"}
        spec["face"] = {"kind": "faces", "path": path}
        for modality, adapter in (("speaker", inputs.speaker_adapter),
                                  ("face", inputs.face_adapter)):
            if adapter:
                spec[modality]["adapter"] = str(Path(adapter).resolve())
        for modality in inputs.drop:
            spec.pop(modality, None)
    return spec


FOLDER_MODALITIES = ("speaker", "face")  # what ``feature_spec`` reads from a feature folder


def with_feature_folder(spec: Mapping[str, dict], features: str | Path) -> dict:
    """``spec`` reading its speaker and face vectors from the feature folder ``features``
    (another corpus's ``erc preprocess`` output) instead of the one it was trained on, and
    whatever else it read from that folder (the main job's text vectors)."""
    from erc.stages.base import read_manifest

    folders = {spec[m]["path"] for m in FOLDER_MODALITIES if m in spec}
    moved = [m for m, item in spec.items() if m in FOLDER_MODALITIES or item["path"] in folders
             or (item["kind"] == "parquet"
                 and (read_manifest(item["path"]) or {}).get("stage") == "preprocess")]
    if not moved:
        raise InputError(f"--features {features}: the model reads no speaker or face vectors "
                         f"(it reads {', '.join(spec)})")
    path = str(Path(features).resolve())
    return {m: {**item, "path": path} if m in moved else dict(item) for m, item in spec.items()}


def spec_paths(spec: Mapping[str, dict]) -> dict[str, str]:
    """The files and folders a feature spec reads, named (the inputs of a training stage)."""
    paths = {}
    for modality, item in spec.items():
        paths[modality] = item["path"]
        if item.get("adapter"):
            paths[f"{modality}_adapter"] = item["adapter"]
    return paths
