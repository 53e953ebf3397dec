"""QC decisions: every utterance of the utterance table gets scores, pass/fail per check,
reasons, a final keep and a proposed speaker label; nothing is deleted.

    result = run_qc("runs/x/features", "runs/x/corpus", "runs/x/qc")

writes into the output folder:

| file                 | what                                                             |
|----------------------|------------------------------------------------------------------|
| decisions.parquet    | one row per utterance of the input table (``DECISION_SCHEMA``)    |
| utterances.parquet   | the kept utterances, utterance-table schema, speaker as QC's final |
|                      | label: the view training reads                                    |
| problems.parquet     | the rows set aside: the ingest's and QC's (reason qc_rejected)    |
| relabels.csv         | every relabel proposal (edit it and pass it back with ``relabels``) |
| report.html / .json  | the report (``erc.qc.report``)                                    |

(The qc stage, ``erc.stages.qc``, adds ``manifest.json``: settings, inputs, summary.)

Order of work: reviewed relabels (``QCConfig.relabels``) are applied to the labels first;
labels equal but for case and spaces are aliases of the most frequent spelling (by name,
whatever the checks); the face and speaker checks find conflated names and aliases on
those labels (face findings win over voice ones; an alias by name wins over an alias the
faces or voices found, not over a conflated name's split) and the speaker check proposes
relabellings of single utterances; the proposals that ``SpeakerConfig.apply`` accepts
("labels": conflated and alias findings; "all": also single utterances that sound like
another speaker, or whose face is another's where voice and face disagree on who) change
the labels and the speaker check runs again on them; the face check runs on the final
labels; alignment needs no labels.

An utterance is kept when its features exist and did not fail and every enabled check
passes. ``reasons`` lists every failure (``check:status``); ``first_reason`` is the first of
them in the order features, alignment, face, speaker, so that removed counts per reason
add up to the number removed.
"""

from __future__ import annotations

import csv
import io as text_io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from erc import io
from erc.artifacts import PROBLEMS
from erc.errors import ConfigError, InputError
from erc.qc.alignment import AlignmentConfig, align_corpus
from erc.qc.embeddings import name_aliases
from erc.qc.faces import (
    FaceConfig,
    check_faces,
    face_judged_labels,
    face_label_findings,
    face_tracks,
    load_face_references,
)
from erc.qc.speakers import SpeakerConfig, check_speakers
from erc.schema import UTTERANCE_SCHEMA
from erc.settings import PATH

CHECKS = ("alignment", "face", "speaker")
DECISIONS = "decisions.parquet"
KEPT = "utterances.parquet"
RELABELS = "relabels.csv"

DECISION_SCHEMA = pa.schema([
    ("utterance_id", pa.string()), ("corpus", pa.string()), ("split", pa.string()),
    ("dialogue_id", pa.string()), ("turn", pa.int32()), ("speaker", pa.string()),
    ("emotion", pa.string()), ("text", pa.string()), ("asr_text", pa.string()),
    ("duration_s", pa.float64()),
    ("feature_status", pa.string()),  # ok, failed, text_only, missing
    ("feature_failure", pa.string()),
    # alignment
    ("alignment_status", pa.string()), ("alignment_pass", pa.bool_()),
    ("alignment_status_paper", pa.string()), ("alignment_status_length_aware", pa.string()),
    ("align_cos_words", pa.float64()), ("align_cos_chars", pa.float64()),
    ("align_lev", pa.float64()), ("align_coverage", pa.float64()), ("align_wer", pa.float64()),
    ("n_words", pa.int32()), ("n_asr_words", pa.int32()), ("length_bucket", pa.string()),
    ("alignment_status_calibrated", pa.string()),
    ("align_word_errors", pa.int32()), ("align_word_error_limit", pa.int32()),
    ("align_missing_start", pa.int32()), ("align_missing_end", pa.int32()),
    ("align_extra_start", pa.int32()), ("align_extra_end", pa.int32()),
    ("speech_s", pa.float64()), ("speech_log_rate", pa.float64()),
    ("align_neighbour", pa.string()),  # neighbour_text: the utterance whose audio says it
    # face
    ("face_status", pa.string()), ("face_pass", pa.bool_()), ("face_best_sim", pa.float64()),
    ("face_candidates", pa.int32()), ("face_n_tracks", pa.int32()),
    ("face_lookalike", pa.string()), ("face_lookalike_sim", pa.float64()),
    # speaker
    ("speaker_status", pa.string()), ("speaker_pass", pa.bool_()), ("speaker_sim", pa.float64()),
    ("speaker_z", pa.float64()),  # robust sds from the label's median similarity
    ("speaker_lookalike", pa.string()), ("speaker_lookalike_sim", pa.float64()),
    ("speaker_gap", pa.float64()),  # lookalike's nearest utterances minus its own's
    ("proposed_speaker", pa.string()), ("relabel_reason", pa.string()),
    ("relabel_applied", pa.bool_()), ("final_speaker", pa.string()),
    # outcome
    ("reasons", pa.list_(pa.string())), ("first_reason", pa.string()), ("keep", pa.bool_()),
])


@dataclass
class QCConfig:
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig, metadata={"prefix": ""})
    faces: FaceConfig = field(default_factory=FaceConfig, metadata={"prefix": "face"})
    speakers: SpeakerConfig = field(default_factory=SpeakerConfig, metadata={"prefix": "speaker"})
    checks: tuple[str, ...] = CHECKS  # the checks that run (the others pass everything)
    face_references: str | None = field(default=None, metadata=PATH)  # .parquet of embeddings or a folder of photos
    relabels: str | None = field(default=None, metadata=PATH)  # a reviewed relabels.csv to apply first
    profile: str = "offline"  # model profile embedding reference photos (a folder only)

    def __post_init__(self):
        unknown = set(self.checks) - set(CHECKS)
        if unknown:
            raise ConfigError(f"unknown QC checks {sorted(unknown)}; checks: {', '.join(CHECKS)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QCResult:
    decisions: pa.Table
    kept: pa.Table
    summary: dict
    out_dir: Path
    skipped: bool = False


# -- inputs -------------------------------------------------------------------------------

# The alignment scores of a row whose audio was never transcribed (its features failed or
# are missing): null, not the scores of an empty ASR transcript.
UNHEARD = ("cos_words", "cos_chars", "lev", "coverage", "wer", "n_asr_words", "word_errors",
           "word_error_limit", "missing_start", "missing_end", "extra_start", "extra_end",
           "speech_s", "log_rate")

FEATURE_COLUMNS = ("utterance_id", "status", "failure_reason", "duration_s", "asr_text",
                   "asr_words", "speech_segments", "n_frames", "faces", "speaker_embedding")


def read_features(features: Path) -> tuple[dict[str, dict], list[dict]]:
    """{utterance_id: feature row} and the model records of a feature folder."""
    from erc.artifacts import feature_models
    from erc.artifacts import read_features as read_table

    # Two equal rows of an utterance are one (read_table refuses two different ones).
    # Every part holds every column QC reads: one without asr_text or faces would fail
    # all its rows as if Whisper heard nothing and no face was seen.
    table = read_table(features, list(FEATURE_COLUMNS), required=FEATURE_COLUMNS)
    rows = {row["utterance_id"]: row for row in table.to_pylist()}
    return rows, feature_models(features)


def check_source(features: Path, utterances: str | Path, table: pa.Table) -> None:
    """InputError unless ``table`` is the utterance table the features in ``features`` (a
    folder, or one of its parts) were computed from (the utterances_digest the preprocess
    stage recorded), or some of its rows: another corpus's features under the same ids
    would be judged as this one's.
    A folder erc did not write (no manifest, no claim) records nothing to compare, and is
    taken as given."""
    from erc.features import source_digest
    from erc.stages.base import content_fingerprint, read_manifest

    folder = features if features.is_dir() else features.parent
    manifest = read_manifest(folder)
    rerun = f"run `erc preprocess {utterances} --out {folder}`"
    if manifest is None:
        if (folder / io.MARKER).exists():
            raise InputError(f"{folder}: an erc preprocess run that did not finish, or is "
                             f"still running (no manifest.json); {rerun} to finish it")
        return
    if manifest.get("stage") != "preprocess":
        raise InputError(f"{folder}: holds the outputs of erc's {manifest.get('stage')} "
                         f"stage, not the features of erc preprocess")
    if content_fingerprint(folder) != manifest.get("content"):
        lost = [name for name in manifest.get("files", {}) if not (folder / name).is_file()]
        what = f"{', '.join(lost)} missing" if lost else "a part file changed"
        raise InputError(f"{folder}: not the features erc preprocess wrote ({what}); "
                         f"{rerun} to recompute what is lost")
    if manifest.get("utterances_digest") is None:
        raise InputError(f"{folder}: written by an earlier erc that did not record its "
                         f"utterance table; {rerun} (finished partitions are kept)")
    made_from = str(manifest.get("inputs", {}).get("utterances", ""))
    digest = manifest["utterances_digest"]
    if digest != source_digest(table) and not _rows_of(made_from, digest, table):
        if Path(made_from).resolve() == Path(utterances).resolve():
            raise InputError(f"{utterances}: its transcripts, media or rows changed since the "
                             f"features in {folder} were computed from it; {rerun}")
        raise InputError(f"{utterances}: not the utterance table the features in {folder} "
                         f"were computed from ({made_from or 'another table'}); give qc that "
                         f"table (or some of its rows), or features of this one "
                         f"(`erc preprocess {utterances}`)")


def _rows_of(source: str, digest: str, table: pa.Table) -> bool:
    """Whether each row of ``table`` that the features' source table (still as it was:
    ``digest``) holds is that row: some of its utterances, relabelled or not."""
    from erc.artifacts import read_utterances
    from erc.features import INPUT_COLUMNS, source_digest

    try:
        rows = read_utterances(source) if source else None
    except InputError:
        return False
    if rows is None or source_digest(rows) != digest:
        return False
    theirs = {row["utterance_id"]: row for row in rows.select(list(INPUT_COLUMNS)).to_pylist()}
    return all(theirs.get(row["utterance_id"], row) == row
               for row in table.select(list(INPUT_COLUMNS)).to_pylist())


def read_relabels(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """({utterance_id: new}, {speaker: new}) from a reviewed relabels CSV: columns
    ``proposed_speaker`` and either ``utterance_id`` or ``speaker`` (a whole label); rows
    whose ``apply`` column is false/no/0 are skipped."""
    by_utterance, by_label = {}, {}
    # utf-8-sig: a file saved by Excel starts with a byte order mark, which would make the
    # first column "\ufeffutterance_id": each utterance's line read as its whole label's.
    with open(path, newline="", encoding="utf-8-sig") as handle:
        try:
            reader = csv.DictReader(handle, strict=True)  # strict: a quote left open is an error
            header = reader.fieldnames or []
            rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as err:
            raise InputError(f"{path}: not a relabels CSV in UTF-8 ({err})") from None
    # Without these columns every row would be skipped: nothing applied, and nothing said.
    if "proposed_speaker" not in header or not {"utterance_id", "speaker"} & set(header):
        raise InputError(f"{path}: a relabels CSV needs the columns proposed_speaker and "
                         f"utterance_id or speaker; its header: "
                         f"{', '.join(header) or 'none (empty file)'}")
    for row in rows:
        if str(row.get("apply", "true")).strip().lower() in ("false", "no", "0", "n"):
            continue
        new = (row.get("proposed_speaker") or "").strip()
        if not new:
            continue
        if (row.get("utterance_id") or "").strip():
            by_utterance[row["utterance_id"].strip()] = new
        elif (row.get("speaker") or "").strip():
            by_label[row["speaker"].strip()] = new
    return by_utterance, by_label


# -- the pass -----------------------------------------------------------------------------

def _face_references(config: QCConfig, models: list[dict], unused: list[str]):
    if not config.face_references:
        return None
    path = Path(config.face_references)
    if path.is_file():
        return load_face_references(path)
    from erc.backends.registry import load_backend, profile_specs

    specs = profile_specs(config.profile)
    embed_record = next((m for m in models if m.get("role") == "face_embed"), None)
    if embed_record and embed_record.get("backend") != specs["face_embed"].backend:
        raise ConfigError(
            f"the features' faces were embedded by {embed_record.get('backend')!r} but profile "
            f"{config.profile!r} embeds with {specs['face_embed'].backend!r}: pick the profile "
            "that produced the features")
    detector = load_backend(specs["face_detect"])
    embedder = load_backend(specs["face_embed"])
    # The same backend with other weights (a preprocess override) embeds faces elsewhere.
    ours = embedder.record().to_dict()
    if embed_record and None not in (embed_record.get("sha256"), ours["sha256"]) \
            and embed_record["sha256"] != ours["sha256"]:
        raise ConfigError(
            f"the features' faces were embedded with the weights {embed_record.get('source')} "
            f"but profile {config.profile!r} embeds reference photos with {ours['source']}: "
            "give embeddings of the features' model as a .parquet file instead")
    return load_face_references(path, detector, embedder, unused=unused)


def dialogue_neighbours(utt: list[dict]) -> list[tuple[int | None, int | None]]:
    """(previous, next) row of each row within its dialogue, by turn (None at the ends)."""
    by_dialogue: dict = {}
    for i, u in enumerate(utt):
        by_dialogue.setdefault((u["corpus"], u["split"], u["dialogue_id"]), []).append(i)
    out: list = [(None, None)] * len(utt)
    for rows in by_dialogue.values():
        rows.sort(key=lambda i: (utt[i]["turn"] is None, utt[i]["turn"] or 0))
        for k, i in enumerate(rows):
            out[i] = (rows[k - 1] if k else None, rows[k + 1] if k + 1 < len(rows) else None)
    return out


def decide(utterances: pa.Table, features: dict[str, dict], models: list[dict],
           config: QCConfig, face_references: dict | None = None) -> tuple[pa.Table, dict]:
    """The decisions table and the check summaries (no file is read or written)."""
    utt = utterances.to_pylist()
    n = len(utt)
    feats = [features.get(u["utterance_id"]) for u in utt]
    # A status preprocessing does not write (null, another word) is a row nothing can be
    # checked on: failed, so that it is set aside with a reason rather than kept unchecked.
    feature_status = [("missing" if f is None else f["status"]
                       if f["status"] in ("ok", "text_only") else "failed") for f in feats]
    ok = [s == "ok" for s in feature_status]
    summary: dict = {"config": config.to_dict(), "models": models}

    # Alignment: every row with a transcript and an ASR transcript.
    if "alignment" in config.checks:
        usable = [(f or {}) if o else {} for f, o in zip(feats, ok)]
        align, summary["alignment"] = align_corpus(
            [u["text"] for u in utt], [f.get("asr_text") for f in usable], config.alignment,
            asr_words=[f.get("asr_words") for f in usable],
            segments=[f.get("speech_segments") for f in usable],
            durations=[f.get("duration_s") for f in usable],
            neighbours=dialogue_neighbours(utt), ids=[u["utterance_id"] for u in utt])
        for row, o in zip(align, ok):
            if not o:
                row.update(status="not_checked", status_paper="not_checked",
                           status_length_aware="not_checked", status_calibrated="not_checked",
                           neighbour=None)
                # Scored against no ASR transcript, they read as a transcript nothing like
                # its audio (similarity 0, every word an error): nothing was heard to compare.
                row.update(dict.fromkeys(UNHEARD))
                row["pass"] = True
    else:
        align = [{"status": "disabled", "pass": True} for _ in utt]

    # Labels: reviewed relabels first.
    labels = [u["speaker"] for u in utt]
    if config.relabels:
        by_utterance, by_label = read_relabels(config.relabels)
        # A label is matched as written and without the spaces around it (the CSV's are
        # stripped): "Ross " in the table is the "Ross" of the file.
        labels = [by_utterance.get(u["utterance_id"],
                                   by_label.get(lab, by_label.get((lab or "").strip(), lab)))
                  for u, lab in zip(utt, labels)]
        ids = {u["utterance_id"] for u in utt}
        names = {u["speaker"] for u in utt} | {(u["speaker"] or "").strip() for u in utt}
        unknown_ids = sorted(k for k in by_utterance if k not in ids)
        unknown_names = sorted(k for k in by_label if k not in names)
        # A file none of whose lines names an utterance or speaker of this table (another
        # corpus's, or every id mistyped) would apply nothing, and say nothing.
        if n and (by_utterance or by_label) \
                and len(unknown_ids) + len(unknown_names) == len(by_utterance) + len(by_label):
            named = [*unknown_ids, *unknown_names]
            raise InputError(
                f"{config.relabels}: names no utterance or speaker of the utterance table "
                f"({len(named)} unknown: {', '.join(map(repr, named[:3]))}"
                f"{', ...' if len(named) > 3 else ''}); give the relabels of this corpus")
        summary["reviewed_relabels"] = {
            "utterances": len(by_utterance), "labels": len(by_label),
            "unknown_utterances": unknown_ids, "unknown_speakers": unknown_names}
    durations = [(f or {}).get("duration_s") for f in feats]

    # Faces: the persons of every clip, and what they say about the labels.
    face_findings, face_moves, settled = [], {}, set()
    if "face" in config.checks:
        faces = [(f or {}).get("faces") if o else None for f, o in zip(feats, ok)]
        frames = [(f or {}).get("n_frames") if o else None for f, o in zip(feats, ok)]
        tracks, face_threshold = face_tracks(faces, models, config.faces)
        face_findings, face_moves = face_label_findings(labels, tracks, face_threshold,
                                                        config.faces)
        settled = face_judged_labels(labels, tracks, config.faces)

    speaker_findings = []
    if "speaker" in config.checks:
        embeddings = [(f or {}).get("speaker_embedding") if o else None for f, o in zip(feats, ok)]
        speak, speaker_summary = check_speakers(labels, embeddings, durations, models,
                                                config.speakers, settled)
        speaker_findings = speaker_summary.pop("findings")
        summary["speaker"] = speaker_summary
    else:
        speak = [{"speaker_status": "disabled", "speaker_pass": True, "proposed_speaker": None,
                  "relabel_reason": None} for _ in utt]
    # Label-level proposals from faces are the stronger evidence: they win over voice ones.
    for i, (target, reason) in face_moves.items():
        speak[i]["proposed_speaker"], speak[i]["relabel_reason"] = target, reason
    # One name but for case and spaces is one speaker, surer than any embedding's alias;
    # a conflated name's split still sends each of its groups where the faces or voices say.
    name_findings, name_moves = name_aliases(labels)
    for i, (target, reason) in name_moves.items():
        if not (speak[i]["relabel_reason"] or "").startswith("conflated:"):
            speak[i]["proposed_speaker"], speak[i]["relabel_reason"] = target, reason
    summary["label_findings"] = name_findings + face_findings + speaker_findings
    if "face" in config.checks and "speaker" in config.checks:
        # A clip whose voice sounds like one speaker and whose face is another known
        # speaker's is the face's: faces separate people far better than voices do.
        seen, _ = check_faces(labels, faces, frames, models, config.faces,
                              references=face_references, tracks=tracks)
        for i, row in enumerate(seen):
            other = row["face_lookalike"]
            if other and (speak[i]["relabel_reason"] or "").startswith("sounds_like:") \
                    and speak[i]["proposed_speaker"] != other:
                speak[i]["proposed_speaker"], speak[i]["relabel_reason"] = other, f"looks_like:{other}"

    accepted = {"none": (), "labels": ("conflated:", "alias_of:"),
                "all": ("conflated:", "alias_of:", "sounds_like:", "looks_like:")}[config.speakers.apply]
    applied = [bool(accepted) and bool(r["proposed_speaker"])
               and r["relabel_reason"].startswith(accepted) for r in speak]
    final = [r["proposed_speaker"] if a else lab for r, a, lab in zip(speak, applied, labels)]
    if any(applied) and "speaker" in config.checks:
        second, second_summary = check_speakers(
            final, embeddings, durations, models, config.speakers,
            face_judged_labels(final, tracks, config.faces) if "face" in config.checks else set())
        for first_row, second_row in zip(speak, second):
            for key in ("speaker_status", "speaker_pass", "speaker_sim", "speaker_z",
                        "speaker_lookalike", "speaker_lookalike_sim", "speaker_gap"):
                first_row[key] = second_row[key]
        summary["speaker"]["after_relabel"] = {
            "references": second_summary["references"],
            "findings": second_summary["findings"]}
        # The statuses are the second pass's, so the cuts the report shows beside them must
        # be too; the first pass's (which made the proposals) stay under before_relabel.
        summary["speaker"]["before_relabel"] = {
            key: summary["speaker"][key] for key in ("calibration", "label_spread")}
        summary["speaker"].update({key: second_summary[key]
                                   for key in ("calibration", "label_spread")})

    if "face" in config.checks:
        face, face_summary = check_faces(final, faces, frames, models, config.faces,
                                         references=face_references, tracks=tracks)
        summary["face"] = face_summary
    else:
        face = [{"face_status": "disabled", "face_pass": True} for _ in utt]

    columns: dict[str, list] = {name: [] for name in DECISION_SCHEMA.names}
    for i, u in enumerate(utt):
        f, a, fa, sp = feats[i] or {}, align[i], face[i], speak[i]
        reasons = []
        if feature_status[i] == "missing":
            reasons.append("features:missing")
        elif feature_status[i] == "failed":
            reasons.append(f"features:{f.get('failure_reason') or 'failed'}")
        if not a["pass"]:
            reasons.append(f"alignment:{a['status']}")
        if not fa["face_pass"]:
            reasons.append(f"face:{fa['face_status']}")
        if not sp["speaker_pass"]:
            reasons.append(f"speaker:{sp['speaker_status']}")
        values = {
            "utterance_id": u["utterance_id"], "corpus": u["corpus"], "split": u["split"],
            "dialogue_id": u["dialogue_id"], "turn": u["turn"], "speaker": u["speaker"],
            "emotion": u["emotion"], "text": u["text"], "asr_text": f.get("asr_text"),
            "duration_s": f.get("duration_s"), "feature_status": feature_status[i],
            "feature_failure": f.get("failure_reason"),
            "alignment_status": a["status"], "alignment_pass": a["pass"],
            "alignment_status_paper": a.get("status_paper"),
            "alignment_status_length_aware": a.get("status_length_aware"),
            "align_cos_words": a.get("cos_words"), "align_cos_chars": a.get("cos_chars"),
            "align_lev": a.get("lev"), "align_coverage": a.get("coverage"),
            "align_wer": a.get("wer"), "n_words": a.get("n_words"),
            "n_asr_words": a.get("n_asr_words"), "length_bucket": a.get("length_bucket"),
            "alignment_status_calibrated": a.get("status_calibrated"),
            "align_word_errors": a.get("word_errors"),
            "align_word_error_limit": a.get("word_error_limit"),
            "align_missing_start": a.get("missing_start"), "align_missing_end": a.get("missing_end"),
            "align_extra_start": a.get("extra_start"), "align_extra_end": a.get("extra_end"),
            "speech_s": a.get("speech_s"), "speech_log_rate": a.get("log_rate"),
            "align_neighbour": a.get("neighbour"),
            "face_status": fa["face_status"], "face_pass": fa["face_pass"],
            "face_best_sim": fa.get("face_best_sim"), "face_candidates": fa.get("face_candidates"),
            "face_n_tracks": fa.get("face_n_tracks"), "face_lookalike": fa.get("face_lookalike"),
            "face_lookalike_sim": fa.get("face_lookalike_sim"),
            "speaker_status": sp["speaker_status"], "speaker_pass": sp["speaker_pass"],
            "speaker_sim": sp.get("speaker_sim"), "speaker_z": sp.get("speaker_z"),
            "speaker_lookalike": sp.get("speaker_lookalike"),
            "speaker_lookalike_sim": sp.get("speaker_lookalike_sim"),
            "speaker_gap": sp.get("speaker_gap"),
            "proposed_speaker": sp.get("proposed_speaker"), "relabel_reason": sp.get("relabel_reason"),
            "relabel_applied": applied[i], "final_speaker": final[i],
            "reasons": reasons, "first_reason": reasons[0] if reasons else None,
            "keep": not reasons,
        }
        for name in columns:
            columns[name].append(values[name])
    decisions = pa.table(columns, schema=DECISION_SCHEMA)
    kept = int(sum(columns["keep"]))
    assert kept + sum(1 for r in columns["first_reason"] if r) == n  # every row accounted for
    return decisions, summary


def kept_utterances(utterances: pa.Table, decisions: pa.Table) -> pa.Table:
    """The kept rows of the utterance table, speaker replaced by QC's final label."""
    keep = decisions.column("keep")
    kept = utterances.filter(keep)
    final = decisions.filter(keep).column("final_speaker")
    index = kept.schema.get_field_index("speaker")
    return kept.set_column(index, kept.schema.field("speaker"), final.cast(pa.string()))


def set_aside(utterances: Path, table: pa.Table, decisions: pa.Table) -> pa.Table:
    """The problem table beside the kept rows: the ingest's (rows never read) and a
    ``qc_rejected`` row for each utterance QC set aside, so that whoever reads the kept
    table (evaluation, a report) counts every input row."""
    from erc.artifacts import problems_beside
    from erc.schema import PROBLEM_SCHEMA, problem_table

    before = problems_beside(utterances)
    rejected = [{"corpus": corpus, "split": split, "source": str(utterances),
                 "utterance_id": uid, "reason": "qc_rejected", "detail": ", ".join(reasons)}
                for corpus, split, uid, reasons, keep in zip(
                    table.column("corpus").to_pylist(), table.column("split").to_pylist(),
                    decisions.column("utterance_id").to_pylist(),
                    decisions.column("reasons").to_pylist(), decisions.column("keep").to_pylist())
                if not keep]
    if before is None:
        return problem_table(rejected)
    return pa.concat_tables([before.select(PROBLEM_SCHEMA.names).cast(PROBLEM_SCHEMA),
                             problem_table(rejected)])


def write_relabels(decisions: pa.Table, path: Path) -> int:
    rows = [r for r in decisions.select(["utterance_id", "speaker", "proposed_speaker",
                                         "relabel_reason", "relabel_applied"]).to_pylist()
            if r["proposed_speaker"]]
    buffer = text_io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["utterance_id", "speaker", "proposed_speaker", "reason", "apply"])
    for r in rows:
        writer.writerow([r["utterance_id"], r["speaker"], r["proposed_speaker"],
                         r["relabel_reason"], "true" if r["relabel_applied"] else "false"])
    io.write_text(path, buffer.getvalue())
    return len(rows)


def run_qc(features: str | Path, utterances: str | Path, out_dir: str | Path,
           config: QCConfig | None = None, report: bool = True) -> QCResult:
    """Reads the feature and utterance tables, decides, writes the outputs (see module doc)
    into ``out_dir`` (claimed by the caller: ``erc.stages.qc`` decides whether to run)."""
    from erc.artifacts import read_utterances

    config = config or QCConfig()
    features, out_dir = Path(features), Path(out_dir)
    started = time.perf_counter()
    utterance_table = read_utterances(utterances)
    check_source(features, utterances, utterance_table)
    # An empty table has no feature parts to read (preprocess wrote none): zero decisions.
    rows, models = read_features(features) if utterance_table.num_rows else ({}, [])
    unused: list[str] = []
    decisions, summary = decide(utterance_table, rows, models, config,
                                _face_references(config, models, unused))
    if unused:  # reference photos left out: said in the report, not lost
        summary.setdefault("face", {})["reference_photos_unused"] = unused
    known = set(decisions.column("utterance_id").to_pylist())
    summary["inputs"] = {
        "features": str(features), "utterances": str(utterances), "feature_rows": len(rows),
        "feature_rows_without_utterance": sum(1 for k in rows if k not in known),
    }
    kept = kept_utterances(utterance_table.cast(UTTERANCE_SCHEMA), decisions)
    io.write_parquet_set([(out_dir / DECISIONS, decisions),
                          (out_dir / PROBLEMS, set_aside(utterances, utterance_table, decisions)),
                          (out_dir / KEPT, kept)])
    summary["relabel_proposals"] = write_relabels(decisions, out_dir / RELABELS)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    result = QCResult(decisions, kept, summary, out_dir)
    if report:
        from erc.qc.report import write_report

        summary["report"] = write_report(result)
    return result
