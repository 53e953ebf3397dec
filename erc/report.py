"""The main job's report: one self-contained HTML page (images inline) over the folders
``erc.stages.main`` writes: what went in and what came out of every stage, in words (read
from each stage's ``manifest.json``); what quality control removed per split, emotion and
speaker; training curves; and per split the metrics, per-class table and confusion
matrix, under a warning when the split is too small for its accuracy to mean anything.
"""

from __future__ import annotations

import base64
import json
import sys
from io import BytesIO
from pathlib import Path

from erc import io
from erc.markup import esc

REPORT = "report.html"
SPEAKERS_SHOWN = 15  # the speakers with most removals; the QC report lists them all
# Fewer labelled utterances than this and an accuracy says nothing about a model: one
# utterance moves it by more than a percentage point, and a class has a handful of
# examples at most.
MIN_JUDGED = 100
# What a damaged or hand-edited record raises while a section reads it
UNREADABLE = (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError)

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left} th{background:#f4f4f4} td.num{text-align:right}
.grid{display:flex;flex-wrap:wrap;gap:1em} .muted{color:#777} code{background:#f4f4f4;padding:0 .2em}
img{max-width:100%;border:1px solid #eee}
.banner{background:#fff4d6;border:1px solid #e0b040;border-radius:4px;padding:.6em 1em;margin:1em 0}
"""


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    """A table cell; numbers (also as text, like "0.273") align right."""
    try:
        float(str(value))
        return f"<td class=num>{esc(value)}</td>"
    except ValueError:
        return f"<td>{esc(value)}</td>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(x, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def training_curves(history: list[dict], path: Path | None = None) -> bytes:
    """Train loss and dev metrics per epoch as PNG bytes (also saved as ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="training loss")
    for key, label in (("dev_weighted_f1", "weighted F1"), ("dev_accuracy", "accuracy"),
                       ("dev_macro_f1", "macro F1")):
        right.plot(epochs, [h[key] for h in history], marker="o", label=label)
    right.set(xlabel="epoch", ylabel="dev score", title="dev metrics", ylim=(0, 1))
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    if path is not None:
        io.write_bytes(path, buffer.getvalue())
    return buffer.getvalue()


def _counts(counts: dict, empty: str = "none") -> str:
    """{'missing_media': 3, 'speaker:other_speaker': 1} -> "3 missing media, 1 speaker:
    other speaker"."""
    text = ", ".join(f"{n:,} {str(key).replace('_', ' ').replace(':', ': ')}"
                     for key, n in counts.items() if n)
    return text or empty


def _stage_rows(out: Path, run: dict) -> list[list]:
    """stage, rows in, rows out, what happened (in words), seconds."""
    seconds = run.get("stages", {})
    ingest, pre = run.get("ingest", {}), run.get("preprocess", {})
    rows = []
    if ingest:
        splits = ", ".join(f"{k} {v['utterances']:,}" for k, v in ingest.get("splits", {}).items())
        rows.append(["ingest", ingest.get("input_rows"), ingest.get("kept"),
                     f"{ingest.get('problems', 0):,} set aside"
                     + (f" ({_counts(ingest.get('problems_by_reason', {}))})"
                        if ingest.get("problems") else "") + f"; per split: {splits}"])
    if pre:
        status = pre.get("status", {})
        rows.append(["preprocess", pre.get("rows_in"), pre.get("rows_out"),
                     f"{status.get('ok', 0):,} with every modality, {status.get('text_only', 0):,} "
                     f"text only" + (f" ({pre['missing_media']:,} of them: media file missing)"
                                     if pre.get("missing_media") else "")
                     + f", {status.get('failed', 0):,} failed"
                     + (f"; failures: {_counts(pre['failures'])}" if pre.get("failures") else "")])
    rows += _rows_or_note("qc", "report.json", lambda: _qc_rows(out, run))
    if "adapters" in seconds:
        adapters = run.get("adapters", {})
        trained = {m: a for m, a in adapters.items() if "n_train" in a}
        rows.append(["adapters", "", "", "; ".join(
            f"{m}: {a['n_train']} train / {a['n_val']} held-out utterances"
            for m, a in trained.items()) or "none trained (raw identity embeddings)"])
    rows += _rows_or_note("train", "history.json", lambda: _train_rows(out, run))
    rows += _rows_or_note("evaluate", "metrics.json", lambda: _evaluate_rows(run))
    for row in rows:
        row.append(_fmt(seconds[row[0]], 1) if row[0] in seconds else "")
    return rows


def _rows_or_note(stage: str, source: str, build) -> list[list]:
    """The stage's rows from its record, or a row saying it cannot be read (the stage's
    own section below gives the reason)."""
    try:
        return build()
    except UNREADABLE:
        return [[stage, "", "", f"{source} cannot be read (below)"]]


def _qc_enabled(run: dict) -> bool:
    return bool(run.get("config", {}).get("qc", {}).get("enabled", True))


def _qc_report(out: Path, run: dict) -> dict | None:
    """QC's report.json; None when QC did not run for this run (disabled: the qc folder
    an earlier run left is not what training read)."""
    return _read_json(out / "qc" / "report.json") if _qc_enabled(run) else None


def _qc_rows(out: Path, run: dict) -> list[list]:
    qc = _qc_report(out, run)
    if qc is None:
        return []
    return [["qc", qc["input"], qc["kept"], f"{qc['removed']:,} set aside"
             + (f" ({_counts(qc['removed_by_first_reason'])})" if qc["removed"] else "")]]


def _train_rows(out: Path, run: dict) -> list[list]:
    history = _history(out / "train" / "history.json") if run.get("trained") else None
    if not history:
        return []
    best = max(history, key=lambda h: h.get("dev_weighted_f1", 0.0))
    return [["train", "", "", f"{len(history)} epochs; best {_chosen_on(run)} weighted F1 "
             f"{best['dev_weighted_f1']:.3f} at epoch {best['epoch'] + 1}"]]


def _chosen_on(run: dict) -> str:
    """What training chose its epoch on: "dev" or "selection slice" (``chosen_on``)."""
    from erc.train.data import chosen_on

    return chosen_on(run.get("train") or {})


def _chosen_split(run: dict, evaluated: dict) -> str | None:
    """The split training chose on (the config's dev split, its 'dev' the valid split
    standing for it), whose figure is the model at its best there, not a held-out one;
    None with a selection slice."""
    from erc.train.data import chosen_split

    splits = run["config"]["train"]["recipe"]["splits"]
    present = set(evaluated) | set((run.get("ingest") or {}).get("splits") or {})
    return chosen_split(splits["dev_split"], splits["select_fraction"], present)


def _evaluate_rows(run: dict) -> list[list]:
    evaluated = _evaluations(run)
    if not evaluated:
        return []
    chosen = _chosen_split(run, evaluated)
    return [["evaluate", "", "", "; ".join(
        (f"{split}: accuracy {m['accuracy']:.3f} on {m['n']:,} utterances" if m["n"] else
         f"{split}: no labelled utterance, {m.get('n_unlabelled', 0):,} predicted")
        + (" (too few to judge)" if 0 < m["n"] < MIN_JUDGED else "")
        + (" (training chose on it: optimistic)" if split == chosen else "")
        for split, m in evaluated.items())]]


def _stage_section(out: Path, run: dict) -> str:
    pre = run.get("preprocess", {})
    models = ", ".join(f"{m['role']}: {m['backend']} {m['name']}" for m in pre.get("models", []))
    return ("<h2>Stages</h2>"
            + _table(["stage", "rows in", "rows out", "what happened", "seconds"],
                     _stage_rows(out, run))
            + (f"<p class=muted>models: {esc(models)}</p>" if models else ""))


def _small_split_banner(evaluated: dict[str, dict]) -> str:
    small = {split: m["n"] for split, m in evaluated.items() if 0 < m["n"] < MIN_JUDGED}
    if not small:
        return ""
    which = ", ".join(f"{split} has {n:,}" for split, n in small.items())
    return (f"<div class=banner><b>Too small to judge accuracy.</b> Of labelled utterances, "
            f"{esc(which)}: fewer than {MIN_JUDGED}, where one utterance moves the accuracy "
            "by a percentage point or more. The figures show that the pipeline runs, not how "
            "well it recognises emotions.</div>")


def _top_banner(run: dict) -> str:
    try:
        return _small_split_banner(_evaluations(run))
    except UNREADABLE:
        return ""  # the evaluation section says which record


def _qc_section(out: Path, run: dict) -> str:
    from erc.qc.report import removal_rows

    data = _qc_report(out, run)
    if data is None:
        why = "" if _qc_enabled(run) else " (disabled in the config)"
        return f"<h2>Quality control</h2><p>QC did not run{why}.</p>"
    parts = [f"<h2>Quality control</h2><p>{data['input']:,} utterances checked, "
             f"{data['kept']:,} kept, {data['removed']:,} set aside"
             + (f": {esc(_counts(data['removed_by_first_reason']))} (first failed check)"
                if data["removed"] else "") + ".</p>"]
    for key, title in (("split", "Per split"), ("emotion", "Per emotion"), ("speaker", "Per speaker")):
        header, rows = removal_rows(data, key)
        shown = rows if key != "speaker" else rows[:SPEAKERS_SHOWN]
        parts.append(f"<h3>{title}</h3>" + _table(header, shown))
        if len(shown) < len(rows):
            parts.append(f"<p class=muted>{len(rows) - len(shown)} more speakers in "
                         '<a href="qc/report.html">qc/report.html</a>.</p>')
        plot = out / "qc" / "plots" / f"kept_by_{key}.png"
        if plot.is_file():
            parts.append(_img(plot.read_bytes(), f"kept and removed per {key}"))
    parts.append('<p>Scores, histograms and examples: <a href="qc/report.html">qc/report.html</a>; '
                 "every decision: <code>qc/decisions.parquet</code>.</p>")
    return "".join(parts)


def _training_section(out: Path, run: dict) -> str:
    history_path = out / "train" / "history.json"
    if not run.get("trained") or not history_path.is_file():
        return ""
    history = _history(history_path)
    if not history:
        return ""
    curves = out / "train" / "curves.png"
    png = curves.read_bytes() if curves.is_file() else training_curves(history)
    best = max(history, key=lambda h: h.get("dev_weighted_f1", 0.0))
    return (f"<h2>Training</h2><p>{len(history)} epochs; best {_chosen_on(run)} weighted F1 "
            f"{best['dev_weighted_f1']:.3f} at epoch {best['epoch'] + 1}. Model: "
            f"<code>train/model</code>.</p>" + _img(png, "training curves"))


def _evaluations(run: dict) -> dict[str, dict]:
    """split -> metrics of every evaluation of this run's config (an eval-* folder an
    earlier run of another config left is not shown)."""
    found = {}
    for folder in map(Path, run.get("evaluations", [])):
        metrics = _read_json(folder / "metrics.json")
        if metrics:
            missing = {"accuracy", "weighted_f1", "macro_f1", "n", "per_class"} - set(metrics)
            if missing:
                raise ValueError(f"{folder / 'metrics.json'}: not the record erc writes "
                                 f"(no {', '.join(sorted(missing))})")
            found[folder.name[len("eval-"):]] = metrics
    return found


def _read_json(path: Path, kind: type = dict):
    """A record a stage wrote (a JSON ``kind``), or None when it is not there; a damaged
    one is a ValueError that names it."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes())
    except ValueError as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, kind):
        raise ValueError(f"{path}: not the record erc writes (a JSON {kind.__name__} expected)")
    return data


def _history(path: Path) -> list[dict] | None:
    """Training's per-epoch record (None when training did not run)."""
    history = _read_json(path, list)
    if history is not None and not all(isinstance(h, dict) and isinstance(h.get("epoch"), int)
                                       for h in history):
        raise ValueError(f"{path}: not the record erc writes (a list of epochs expected)")
    return history


def _section(title: str, sources: str, build, *args) -> str:
    """One part of the page, or a notice where its records (``sources``) cannot be read:
    a damaged or edited file of one stage costs its section, not the report."""
    try:
        return build(*args)
    except UNREADABLE as err:
        reason = f"{sources}: {type(err).__name__}: {err}"
        print(f"[report] {title}: not shown, its records cannot be read ({reason})",
              file=sys.stderr, flush=True)
        return (f"<h2>{esc(title)}</h2><div class=banner><b>Not shown.</b> Its records "
                f"cannot be read: {esc(reason)}</div>")


def _evaluation_section(out: Path, run: dict) -> str:
    parts = []
    evaluated = _evaluations(run)
    chosen = _chosen_split(run, evaluated)
    for split, m in evaluated.items():
        folder = out / f"eval-{io.path_part(split)}"
        per_class = [[label, _fmt(v["precision"]), _fmt(v["recall"]), _fmt(v["f1"]), v["support"]]
                     for label, v in m["per_class"].items()]
        confusion = folder / "confusion.png"
        scores = (f"accuracy {m['accuracy']:.3f}, weighted F1 {m['weighted_f1']:.3f}, "
                  f"macro F1 {m['macro_f1']:.3f} (n={m['n']})" if m["n"] else
                  f"no labelled utterance, nothing scored ({m.get('n_unlabelled', 0):,} predicted)")
        parts.append(
            f"<h3>{esc(split)}: {scores}</h3>"
            + ("<p class=muted>Training chose its epoch (and candidate) on this split: the "
               "model at its best here, an optimistic figure. Quote a split it never chose "
               "on.</p>" if split == chosen else "")
            + _small_split_banner({split: m})
            + '<div class="grid"><div>'
            + _table(["emotion", "precision", "recall", "F1", "support"], per_class)
            + "</div><div>"
            + (_img(confusion.read_bytes(), f"confusion matrix {split}") if confusion.is_file() else "")
            + f"</div></div><p class=muted>predictions: <code>{esc(folder.name)}/predictions.parquet"
              "</code></p>")
    if not parts:
        return ""
    return "<h2>Evaluation</h2>" + "".join(parts)


def run_summary(config) -> dict:
    """What the report shows of each stage, from the manifests of the run's folders:
    {"config", "stages": {stage: seconds}, "ingest": summary, "preprocess": summary,
    "outputs": {folder: path}, "trained": whether the config trains, "evaluations": the
    config's evaluation folders}. Folders an earlier run of another config left on the
    same output folder are none of these."""
    import dataclasses

    from erc.stages.base import read_manifest
    from erc.stages.layout import Layout

    layout = Layout(config)
    run = {"config": dataclasses.asdict(config), "stages": {}, "outputs": {},
           "trained": bool(config.train.enabled),
           "evaluations": [str(p) for p in layout.evaluations()]}
    for name, folder in layout.stage_folders().items():
        manifest = read_manifest(folder)
        if manifest is None:
            continue
        stage, seconds = manifest.get("stage"), manifest.get("seconds", 0.0)
        if not isinstance(stage, str) or not isinstance(seconds, (int, float)):
            continue  # not a record erc wrote: the stage's section says what it can
        run["stages"][stage] = run["stages"].get(stage, 0.0) + seconds
        run["outputs"][name] = str(folder)
        if stage in ("ingest", "preprocess", "adapters", "train"):
            summary = manifest.get("summary", {})
            run[stage] = summary if isinstance(summary, dict) else {}
    return run


def write_report(out: str | Path, config) -> Path:
    """Writes ``out/report.html`` from the run's folders; returns its path."""
    out = Path(out)
    run = run_summary(config)
    corpus = run.get("config", {}).get("corpus", {}).get("path", "")
    outputs = [[name, path] for name, path in run.get("outputs", {}).items()]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>erc run: {esc(out.name)}"
            f"</title><style>{STYLE}</style></head><body>"
            f"<h1>erc run: {esc(out.name)}</h1><p>corpus <code>{esc(corpus)}</code></p>"
            + _top_banner(run)
            + _section("Stages", "the stage manifests", _stage_section, out, run)
            + _section("Quality control", "qc/report.json", _qc_section, out, run)
            + _section("Training", "train/history.json", _training_section, out, run)
            + _section("Evaluation", "eval-*/metrics.json", _evaluation_section, out, run)
            + "<h2>Outputs</h2>" + _table(["output", "path"], outputs)
            + "</body></html>")
    return io.write_text(out / REPORT, page)
