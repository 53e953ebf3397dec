"""The main job (``erc run``): ingest -> preprocess -> QC -> adapters -> fusion training ->
evaluation -> one HTML report, each stage in its own folder under ``output_dir``:

    corpus/     utterances.parquet, problems.parquet        (erc corpus ingest)
    features/   part-*.parquet, summary.json                (erc preprocess)
    qc/         decisions.parquet, utterances.parquet, report.html   (erc qc)
    adapters/   speaker/model, face/model                   (identity -> emotion MLPs)
    train/      model/, history.json, ray/                  (fusion model, Ray Train)
    eval-SPLIT/ metrics.json, predictions.parquet, confusion.png
    report.html, run.json

Every stage skips work that is up to date (same inputs and settings), so running the job
again does nothing twice and an interrupted job resumes; ``force`` recomputes everything.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from erc.config import ConfigError, RunConfig, from_dict

STAGES = ("ingest", "preprocess", "qc", "adapters", "train", "evaluate")
IDENTITY = {"speaker": "speaker_embedding", "face": "faces"}  # modality -> feature column


def _stamp(*parts, root: Path | None = None) -> str:
    """A digest of ``parts``; paths under ``root`` count relative to it, so an output folder
    that moved (the local copy of an s3:// output on another head node) is still up to date."""
    text = json.dumps(parts, sort_keys=True, default=str)
    if root is not None:
        text = text.replace(str(Path(root).resolve()), "<output_dir>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _up_to_date(folder: Path, stamp: str, needs: str) -> bool:
    record = folder / "stamp.json"
    return ((folder / needs).exists() and record.is_file()
            and json.loads(record.read_text()).get("stamp") == stamp)


def _write_stamp(folder: Path, stamp: str, **extra) -> None:
    (folder / "stamp.json").write_text(json.dumps({"stamp": stamp, **extra}, indent=2))


def qc_config(config: RunConfig):
    from erc.qc.decisions import QCConfig

    try:
        return from_dict(QCConfig, config.qc.options, where="qc.options")
    except (TypeError, ValueError) as err:
        raise ConfigError(f"qc.options: {err}") from err


def _identity_vectors(features: Path, modality: str) -> dict[str, np.ndarray]:
    from erc.train.data import read_vectors
    from erc.train.recipes import face_vectors

    if modality == "face":
        return face_vectors(features)
    return read_vectors(features, IDENTITY[modality])


def train_adapters(table, features: Path, out: Path, config: RunConfig, force: bool,
                   say: Callable[[str], None]) -> dict[str, Path]:
    """An identity -> emotion adapter per identity modality, on the training split (speakers
    are the groups its early stopping holds out). Returns modality -> adapter folder."""
    from erc.models.adapters import save_adapter, train_adapter
    from erc.train.recipes import table_fingerprint

    train = config.train
    split = table.column("split").to_pylist()
    ids = table.column("utterance_id").to_pylist()
    emotions = table.column("emotion").to_pylist()
    speakers = table.column("speaker").to_pylist()
    labels = sorted({e for e in emotions if e})
    done = {}
    for modality in [m for m in train.modalities if m in IDENTITY]:
        folder = out / modality
        vectors = _identity_vectors(features, modality)
        rows = [i for i, u in enumerate(ids)
                if split[i] == train.train_split and emotions[i] and u in vectors]
        stamp = _stamp(table_fingerprint(table), modality, sorted(vectors)[:5], len(vectors),
                       train.seed)
        if not force and _up_to_date(folder, stamp, "model/model.safetensors"):
            say(f"  {modality} adapter up to date: {folder / 'model'}")
            done[modality] = folder / "model"
            continue
        if len(rows) < 4 or len({emotions[i] for i in rows}) < 2:
            say(f"  {modality} adapter skipped: {len(rows)} labelled training utterances with "
                f"a {modality} embedding (raw embeddings go into the fusion model)")
            continue
        train_rows = (np.stack([vectors[ids[i]] for i in rows]), [emotions[i] for i in rows],
                      [speakers[i] for i in rows])
        adapter, info = train_adapter(*train_rows, modality, labels)
        save_adapter(folder / "model", adapter, *train_rows, metrics=info)
        _write_stamp(folder, stamp, n_train=info["n_train"], n_val=info["n_val"])
        say(f"  {modality} adapter: {info['n_train']} train / {info['n_val']} held-out "
            f"utterances, held-out accuracy {info['best_val_accuracy']}")
        done[modality] = folder / "model"
    return done


def feature_spec(features: Path, modalities: list[str], adapters: dict[str, Path]) -> dict:
    """What the fusion model reads (stored with it, so evaluation rebuilds the same inputs):
    the text embeddings the preprocessing pass computed, the speaker embeddings, the faces."""
    spec = {}
    for modality in modalities:
        if modality == "text":
            spec["text"] = {"kind": "parquet", "path": str(features), "column": "text_embedding"}
        elif modality == "speaker":
            spec["speaker"] = {"kind": "parquet", "path": str(features),
                               "column": "speaker_embedding"}
        elif modality == "face":
            spec["face"] = {"kind": "faces", "path": str(features)}
        else:
            raise ConfigError(f"train.modalities: unknown modality {modality!r} "
                              f"(text, speaker, face)")
        if modality in adapters:
            spec[modality]["adapter"] = str(adapters[modality])
    return spec


def run_main(config: RunConfig, force: bool = False, say: Callable[[str], None] = print) -> dict:
    """Runs every stage; returns the run record (also written to ``run.json``)."""
    from erc.pipeline.ingest import run_ingest
    from erc.pipeline.preprocess import format_summary as preprocess_summary
    from erc.pipeline.preprocess import run_preprocess
    from erc.summary import format_summary as ingest_summary

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    record = {"config": asdict(config), "stages": seconds, "outputs": {}}
    steps = len(STAGES) if config.train.enabled else 3
    qc_settings = qc_config(config) if config.qc.enabled else None

    def begin(n: int, name: str, what: str) -> float:
        say(f"\n[{n}/{steps} {name}] {what}")
        return time.perf_counter()

    started = begin(1, "ingest", str(config.corpus.path))
    ingest = run_ingest(config.corpus, out / "corpus", force=force, ray_address=config.ray.address)
    seconds["ingest"] = time.perf_counter() - started
    say(ingest_summary(ingest.summary))
    record["outputs"]["utterances"] = str(out / "corpus" / "utterances.parquet")
    record["ingest"] = ingest.summary

    started = begin(2, "preprocess", f"profile {config.preprocess.profile}")
    features = Path(config.preprocess.output_dir or out / "features")
    pre = run_preprocess(out / "corpus", features, config.preprocess, ray=config.ray,
                         force=force, progress=say)
    seconds["preprocess"] = time.perf_counter() - started
    record["outputs"]["features"] = str(features)
    record["preprocess"] = pre.summary

    utterances = out / "corpus"
    if qc_settings is not None:
        from erc.qc.decisions import run_qc

        started = begin(3, "qc", "alignment, face and speaker checks")
        qc = run_qc(features, out / "corpus", out / "qc", qc_settings, force=force)
        seconds["qc"] = time.perf_counter() - started
        n = qc.decisions.num_rows
        kept = qc.kept.num_rows
        say(f"  {kept} of {n} utterances kept, {n - kept} set aside"
            + (" (up to date)" if qc.skipped else "") + f": {out / 'qc' / 'report.html'}")
        utterances = out / "qc"
        record["outputs"]["qc_decisions"] = str(out / "qc" / "decisions.parquet")
        record["outputs"]["qc_report"] = str(out / "qc" / "report.html")
    else:
        say("\n[3 qc] disabled in the config: training on every utterance")

    if config.train.enabled:
        _train_and_evaluate(config, utterances, features, out, force, say, seconds, record)

    from erc.report import write_report

    record["outputs"]["report"] = str(out / "report.html")
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str))
    write_report(out)
    say(f"\npreprocess: {preprocess_summary(pre.summary).splitlines()[0]}")
    say("\noutputs:")
    for name, path in record["outputs"].items():
        say(f"  {name:18} {path}")
    return record


def _train_and_evaluate(config: RunConfig, utterances: Path, features: Path, out: Path,
                        force: bool, say, seconds: dict, record: dict) -> None:
    from erc.train.data import load_utterances
    from erc.train.evaluate import evaluate
    from erc.train.loop import TrainConfig
    from erc.train.recipes import load_features, table_fingerprint, train_fusion

    train = config.train
    table = load_utterances(utterances)
    present = set(table.column("split").to_pylist())
    missing = [s for s in (train.train_split, train.dev_split) if s not in present]
    if missing:
        raise ConfigError(f"train: no utterances in split(s) {missing} after QC "
                          f"(splits present: {sorted(present)})")

    started = time.perf_counter()
    say(f"\n[4/{len(STAGES)} adapters] identity -> emotion MLPs on the {train.train_split} split")
    adapters = (train_adapters(table, features, out / "adapters", config, force, say)
                if train.adapters == "train_split" else {})
    if train.adapters not in ("train_split", "none"):
        raise ConfigError(f"train.adapters must be 'train_split' or 'none', got {train.adapters!r}")
    seconds["adapters"] = time.perf_counter() - started

    started = time.perf_counter()
    say(f"\n[5/{len(STAGES)} train] {train.mixer} fusion on Ray Train ({train.workers} worker(s))")
    spec = feature_spec(features, train.modalities, adapters)
    vectors = load_features(spec, table)
    for modality in [m for m in spec if not vectors[m]]:  # e.g. a corpus without media
        say(f"  {modality}: no embeddings in {features} (no media?): left out of the model")
        del spec[modality], vectors[modality]
    if not spec:
        raise ConfigError(f"train: none of the modalities {train.modalities} has features")
    options = {"mixer": train.mixer, **train.model}
    train_dir = out / "train"
    cfg = TrainConfig(name="fusion", storage_path=train.storage or str((train_dir / "ray").resolve()),
                      epochs=train.epochs, batch_size=train.batch_size, lr=train.lr,
                      patience=train.patience, seed=train.seed, num_workers=train.workers,
                      use_gpu=train.gpu or bool(train.accelerator_type),
                      accelerator_type=train.accelerator_type)
    say(f"  modalities: {', '.join(spec)}")
    stamp = _stamp(table_fingerprint(table), spec, options, asdict(cfg), root=out)
    if not force and _up_to_date(train_dir, stamp, "model/model.safetensors"):
        say(f"  up to date: {train_dir / 'model'}")
    else:
        outcome = train_fusion(table, spec, train_dir, cfg, options,
                               roles={"train": train.train_split, "dev": train.dev_split},
                               address=config.ray.address, features=vectors)
        (train_dir / "history.json").write_text(json.dumps(outcome.history, indent=2))
        _write_stamp(train_dir, stamp, best=outcome.best)
        best = outcome.best
        say(f"  best epoch {best['epoch']}: dev weighted F1 {best['dev_weighted_f1']:.3f}, "
            f"accuracy {best['dev_accuracy']:.3f} ({len(outcome.history)} epochs)")
    seconds["train"] = time.perf_counter() - started
    record["outputs"]["model"] = str(train_dir / "model")

    started = time.perf_counter()
    say(f"\n[6/{len(STAGES)} evaluate] {', '.join(train.eval_splits)}")
    for split in train.eval_splits:
        if split not in present:
            say(f"  {split}: no utterances after QC, skipped")
            continue
        result = evaluate(train_dir / "model", table, split, out / f"eval-{split}",
                          title=f"{train.mixer} fusion on {split}")
        m = result.metrics
        say(f"  {split}: accuracy {m['accuracy']:.3f}, weighted F1 {m['weighted_f1']:.3f}, "
            f"macro F1 {m['macro_f1']:.3f} (n={result.predictions.num_rows})")
        record["outputs"][f"eval_{split}"] = str(out / f"eval-{split}")
    seconds["evaluate"] = time.perf_counter() - started
