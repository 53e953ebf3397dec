"""The main job's report: one self-contained HTML page (images inline) over the folders
``erc.stages.main`` writes: what went in and what came out of every stage (read from each
stage's ``manifest.json``), the QC summary, training curves, and per split the metrics,
per-class table and confusion matrix.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from io import BytesIO
from pathlib import Path

import pyarrow.parquet as pq

from erc import io

REPORT = "report.html"

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right} th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:1em} .muted{color:#777} code{background:#f4f4f4;padding:0 .2em}
img{max-width:100%;border:1px solid #eee}
"""


def _esc(value) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


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


def _stage_section(run: dict) -> str:
    seconds = run.get("stages", {})
    ingest, pre = run.get("ingest", {}), run.get("preprocess", {})
    rows = [["ingest", ingest.get("input_rows"), ingest.get("kept"),
             f"{ingest.get('problems')} problems: {ingest.get('problems_by_reason') or {}}",
             _fmt(seconds.get("ingest", 0.0), 1)]]
    if pre:
        rows.append(["preprocess", pre.get("rows_in"), pre.get("rows_out"),
                     f"{pre.get('status')}; failures {pre.get('failures') or {}}",
                     _fmt(seconds.get("preprocess", 0.0), 1)])
    for stage in ("qc", "adapters", "train", "evaluate"):
        if stage in seconds:
            rows.append([stage, "", "", "", _fmt(seconds[stage], 1)])
    models = ", ".join(f"{m['role']}: {m['backend']} {m['name']}" for m in pre.get("models", []))
    return ("<h2>Stages</h2>" + _table(["stage", "rows in", "rows out", "notes", "seconds"], rows)
            + f"<p class=muted>models: {_esc(models)}</p>")


def _qc_section(out: Path) -> str:
    path = out / "qc" / "decisions.parquet"
    if not path.is_file():
        return "<h2>Quality control</h2><p>QC did not run (disabled in the config).</p>"
    d = pq.read_table(path, columns=["split", "keep", "first_reason"]).to_pylist()
    by_split = Counter((r["split"], r["keep"]) for r in d)
    splits = sorted({r["split"] for r in d})
    rows = [[s, by_split[(s, True)] + by_split[(s, False)], by_split[(s, True)],
             by_split[(s, False)]] for s in splits]
    rows.append(["all", len(d), sum(r["keep"] for r in d), sum(not r["keep"] for r in d)])
    reasons = Counter(r["first_reason"] for r in d if not r["keep"])
    reason_rows = [[k, v] for k, v in reasons.most_common()] or [["(none)", 0]]
    return ("<h2>Quality control</h2>"
            + _table(["split", "utterances", "kept", "set aside"], rows)
            + _table(["first failed check", "utterances"], reason_rows)
            + '<p>Scores, histograms and examples: <a href="qc/report.html">qc/report.html</a>; '
              "every decision: <code>qc/decisions.parquet</code>.</p>")


def _training_section(out: Path) -> str:
    history_path = out / "train" / "history.json"
    if not history_path.is_file():
        return ""
    history = json.loads(history_path.read_text())
    if not history:
        return ""
    curves = out / "train" / "curves.png"
    png = curves.read_bytes() if curves.is_file() else training_curves(history)
    best = max(history, key=lambda h: h.get("dev_weighted_f1", 0.0))
    return (f"<h2>Training</h2><p>{len(history)} epochs; best dev weighted F1 "
            f"{best['dev_weighted_f1']:.3f} at epoch {best['epoch'] + 1}. Model: "
            f"<code>train/model</code>.</p>" + _img(png, "training curves"))


def _evaluation_section(out: Path) -> str:
    parts = []
    for folder in sorted(out.glob("eval-*")):
        metrics_path = folder / "metrics.json"
        if not metrics_path.is_file():
            continue
        m = json.loads(metrics_path.read_text())
        split = folder.name[len("eval-"):]
        per_class = [[label, _fmt(v["precision"]), _fmt(v["recall"]), _fmt(v["f1"]), v["support"]]
                     for label, v in m["per_class"].items()]
        confusion = folder / "confusion.png"
        parts.append(
            f"<h3>{_esc(split)}: accuracy {m['accuracy']:.3f}, weighted F1 "
            f"{m['weighted_f1']:.3f}, macro F1 {m['macro_f1']:.3f} (n={m['n']})</h3>"
            '<div class="grid"><div>'
            + _table(["emotion", "precision", "recall", "F1", "support"], per_class)
            + "</div><div>"
            + (_img(confusion.read_bytes(), f"confusion matrix {split}") if confusion.is_file() else "")
            + f"</div></div><p class=muted>predictions: <code>{_esc(folder.name)}/predictions.parquet"
              "</code></p>")
    if not parts:
        return ""
    return "<h2>Evaluation</h2>" + "".join(parts)


def run_summary(config) -> dict:
    """What the report shows of each stage, from the manifests of the run's folders:
    {"config", "stages": {stage: seconds}, "ingest": summary, "preprocess": summary,
    "outputs": {folder: path}}."""
    import dataclasses

    from erc.stages.base import read_manifest
    from erc.stages.layout import Layout

    run = {"config": dataclasses.asdict(config), "stages": {}, "outputs": {}}
    for name, folder in Layout(config).stage_folders().items():
        manifest = read_manifest(folder)
        if manifest is None:
            continue
        stage = manifest["stage"]
        run["stages"][stage] = run["stages"].get(stage, 0.0) + manifest.get("seconds", 0.0)
        run["outputs"][name] = str(folder)
        if manifest["stage"] in ("ingest", "preprocess"):
            run[manifest["stage"]] = manifest.get("summary", {})
    return run


def write_report(out: str | Path, config) -> Path:
    """Writes ``out/report.html`` from the run's folders; returns its path."""
    out = Path(out)
    run = run_summary(config)
    corpus = run.get("config", {}).get("corpus", {}).get("path", "")
    outputs = [[name, path] for name, path in run.get("outputs", {}).items()]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>erc run: {_esc(out.name)}"
            f"</title><style>{STYLE}</style></head><body>"
            f"<h1>erc run: {_esc(out.name)}</h1><p>corpus <code>{_esc(corpus)}</code></p>"
            + _stage_section(run) + _qc_section(out) + _training_section(out)
            + _evaluation_section(out)
            + "<h2>Outputs</h2>" + _table(["output", "path"], outputs)
            + "</body></html>")
    return io.write_text(out / REPORT, page)
