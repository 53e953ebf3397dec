"""The QC report: ``report.json`` (every figure) and ``report.html`` (the same for a person,
with the plots embedded as PNG), written beside the decisions.

Counts add up: input = kept + removed, and removed = the sum over ``first_reason``. An
utterance failing several checks counts once there (under its first reason, in the order
features, alignment, face, speaker) and once per check under ``failed_by_check``.
"""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from io import BytesIO
from pathlib import Path

import numpy as np

from erc import io
from erc.markup import esc
from erc.qc.alignment import LENGTH_BUCKETS, PASSING, length_bucket
from erc.qc.speakers import CLOSER_KEY

EXAMPLES_PER_STATUS = 8
STATUS_COLUMNS = {"alignment": "alignment_status", "face": "face_status",
                  "speaker": "speaker_status"}


def _count_table(rows: list[dict], key: str) -> list[dict]:
    """Per value of ``key``: n, kept, removed, and failures per check."""
    groups: dict = defaultdict(list)
    for r in rows:
        groups[r[key] if r[key] is not None else "(none)"].append(r)
    out = []
    for value in sorted(groups, key=lambda v: (-len(groups[v]), str(v))):
        members = groups[value]
        kept = sum(r["keep"] for r in members)
        entry = {key: value, "n": len(members), "kept": kept, "removed": len(members) - kept}
        for check in ("alignment", "face", "speaker"):
            entry[f"failed_{check}"] = sum(r[f"{check}_pass"] is False for r in members)
        entry["failed_features"] = sum(r["feature_status"] in ("failed", "missing") for r in members)
        out.append(entry)
    return out


def _by_length(rows: list[dict]) -> list[dict]:
    out = []
    for low, _ in LENGTH_BUCKETS:
        name = length_bucket(low)
        members = [r for r in rows if r["length_bucket"] == name
                   and r["alignment_status_paper"] not in (None, "not_checked", "no_transcript")]
        entry = {"bucket": name, "n": len(members)}
        if members:
            for score in ("align_cos_words", "align_cos_chars", "align_lev", "align_wer"):
                entry["median_" + score.removeprefix("align_")] = float(
                    np.median([r[score] for r in members]))
            for rule in ("paper", "length_aware"):
                entry[f"pass_rate_{rule}"] = float(np.mean(
                    [r[f"alignment_status_{rule}"] in PASSING for r in members]))
        out.append(entry)
    return out


def _examples(rows: list[dict]) -> dict[str, list[dict]]:
    fields = ("utterance_id", "speaker", "emotion", "text", "asr_text", "align_cos_words",
              "align_lev", "align_coverage", "align_word_errors", "align_neighbour",
              "face_best_sim", "face_lookalike", "speaker_sim", "speaker_z",
              "speaker_lookalike", "proposed_speaker", "reasons")
    out: dict[str, list[dict]] = {}
    for r in rows:
        for reason in r["reasons"]:
            bucket = out.setdefault(reason, [])
            if len(bucket) < EXAMPLES_PER_STATUS:
                bucket.append({k: r[k] for k in fields})
    return dict(sorted(out.items()))


def calibration_rows(summary: dict) -> list[dict]:
    """Every threshold learned from the corpus (or its default), with why."""
    rows = []
    align = summary.get("alignment") or {}
    for key, name in (("asr_error_rate", "ASR word error rate on clean speech"),
                      ("log_rate_low", "too short: log voiced seconds per syllable below"),
                      ("log_rate_high", "too long: log voiced seconds per syllable above")):
        if key in align:
            rows.append({"threshold": name, **align[key]})
    for key, value in ((summary.get("speaker") or {}).get("calibration") or {}).items():
        rows.append({"threshold": f"speaker: {key}", **value})
    return rows


def report_data(decisions, summary: dict) -> dict:
    rows = decisions.to_pylist()
    n = len(rows)
    kept = sum(r["keep"] for r in rows)
    first = Counter(r["first_reason"] for r in rows if r["first_reason"])
    data = {
        "input": n, "kept": kept, "removed": n - kept,
        "removed_by_first_reason": dict(first.most_common()),
        "failed_by_check": {c: sum(r[f"{c}_pass"] is False for r in rows)
                            for c in ("alignment", "face", "speaker")},
        "failed_features": sum(r["feature_status"] in ("failed", "missing") for r in rows),
        "status_counts": {c: dict(Counter(r[col] for r in rows).most_common())
                          for c, col in STATUS_COLUMNS.items()},
        "by_split": _count_table(rows, "split"),
        "by_emotion": _count_table(rows, "emotion"),
        "by_speaker": _count_table(rows, "speaker"),
        "alignment_by_length": _by_length(rows),
        "relabels": {
            "proposed": sum(bool(r["proposed_speaker"]) for r in rows),
            "applied": sum(bool(r["relabel_applied"]) for r in rows),
            "by_reason": dict(Counter(r["relabel_reason"].split(":")[0] for r in rows
                                      if r["relabel_reason"]).most_common()),
            "label_findings": summary.get("label_findings", []),
            # A reviewed relabels.csv given back: its lines that named nothing of this table.
            "reviewed": summary.get("reviewed_relabels"),
        },
        "thresholds": {
            "alignment": {k: summary["config"]["alignment"][k] for k in
                          ("rule", "cosine", "cos_threshold", "lev_threshold", "short_words",
                           "min_coverage")},
            "word_error_limits": (summary.get("alignment") or {}).get("word_error_limits"),
            "log_rate": [((summary.get("alignment") or {}).get(k) or {}).get("value")
                         for k in ("log_rate_low", "log_rate_high")],
            "face": (summary.get("face") or {}).get("threshold"),
            "speaker_z": [-(summary.get("speaker") or {}).get(k) for k in ("outlier_z",)
                          if (summary.get("speaker") or {}).get(k) is not None],
            "speaker_same_person": (summary.get("speaker") or {}).get("same_person"),
            "speaker_closer": (((summary.get("speaker") or {}).get("calibration") or {}).get(
                CLOSER_KEY) or {}).get("value"),
        },
        "calibration": calibration_rows(summary),
        "face": {k: v for k, v in (summary.get("face") or {}).items() if k != "reference_support"},
        "examples": _examples(rows),
        "inputs": summary.get("inputs", {}),
        "models": summary.get("models", []),
    }
    assert data["kept"] + sum(first.values()) == n
    return data


def reference_notes(face: dict) -> list[str]:
    """What a person must hear about the reference photos given (photos left out, names of
    no speaker, references none of their speaker's clips match), for every command that
    runs QC to print."""
    notes = []
    unused = face.get("reference_photos_unused") or []
    if unused:
        notes.append(f"face references: {len(unused)} photo(s) not used (all in report.json)")
        notes.extend(f"  {line}" for line in unused[:5])
    no_speaker = face.get("references_for_no_speaker") or []
    if no_speaker:
        notes.append(f"face references for no speaker of the corpus: {', '.join(map(repr, no_speaker[:5]))}"
                     + (f" and {len(no_speaker) - 5} more" if len(no_speaker) > 5 else ""))
    mismatched = face.get("references_matching_no_clip") or {}
    if mismatched:
        notes.append("face references matching none of their speaker's clips (a photo of "
                     "someone else? all those clips are other_face): "
                     + ", ".join(f"{name!r} (0 of {n})" for name, n in list(mismatched.items())[:5])
                     + (f" and {len(mismatched) - 5} more" if len(mismatched) > 5 else ""))
    return notes


def removal_rows(data: dict, key: str) -> tuple[list[str], list[list]]:
    """What QC set aside per ``key`` (split, emotion or speaker), from ``report_data``:
    header and rows, most set aside first, then a total row for splits and emotions.
    The check columns count failures of each check (an utterance may fail several)."""
    header = [key, "utterances", "kept", "set aside", "% set aside", "failed alignment",
              "failed face", "failed speaker", "failed features"]
    entries = sorted(data[f"by_{key}"], key=lambda e: (-e["removed"], -e["n"], str(e[key])))
    if key != "speaker":
        entries.append({key: "all", "n": data["input"], "kept": data["kept"],
                        "removed": data["removed"],
                        **{f"failed_{c}": n for c, n in data["failed_by_check"].items()},
                        "failed_features": data["failed_features"]})
    rows = [[e[key], e["n"], e["kept"], e["removed"], f"{100 * e['removed'] / max(e['n'], 1):.1f}",
             e["failed_alignment"], e["failed_face"], e["failed_speaker"], e["failed_features"]]
            for e in entries]
    return header, rows


# -- plots --------------------------------------------------------------------------------

def _png(fig) -> bytes:
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _status_hist(ax, values_by_label: dict[str, list[float]], bins, lines: list[tuple[float, str]],
                 title: str, xlabel: str):
    """One histogram per label (values outside the bins counted in the end bins) and a
    dashed line at each threshold."""
    for label, values in values_by_label.items():
        if values:
            ax.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.6,
                    label=f"{label} ({len(values)})")
    for value, name in lines:
        ax.axvline(value, color="k", linestyle="--", linewidth=1, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("utterances")
    ax.legend(fontsize=7)


def _hist(ax, values_by_label: dict[str, list[float]], threshold, title: str, xlabel: str):
    """A similarity histogram (up to 1) with its threshold."""
    bins = np.linspace(min(0.0, *(min(v) for v in values_by_label.values() if v)), 1.0, 41)
    lines = [] if threshold is None else [(threshold, f"threshold {threshold:g}")]
    _status_hist(ax, values_by_label, bins, lines, title, xlabel)


def plots(decisions, data: dict) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    # Split, emotion and status names are the corpus's text, not mathtext: a name with two
    # "$" in it is drawn as written.
    with matplotlib.rc_context({"text.parse_math": False}):
        return _plots(decisions, data)


def _plots(decisions, data: dict) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    rows = decisions.to_pylist()
    out: dict[str, bytes] = {}
    th = data["thresholds"]

    fig, ax = plt.subplots(figsize=(7, 0.4 * max(3, len(data["removed_by_first_reason"])) + 1))
    reasons = list(data["removed_by_first_reason"].items())[::-1]
    ax.barh([r for r, _ in reasons] or ["(none removed)"], [c for _, c in reasons] or [0],
            color="#c0504d")
    ax.set_title(f"removed by first reason: {data['removed']} of {data['input']}")
    ax.set_xlabel("utterances")
    out["removed_by_reason"] = _png(fig)

    aligned = [r for r in rows if r["align_cos_words"] is not None
               and r["alignment_status"] not in ("not_checked", "no_transcript", "disabled")]
    if aligned:
        cos_key = "align_cos_" + th["alignment"]["cosine"]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        split = lambda key: {"pass": [r[key] for r in aligned if r["alignment_pass"]],
                             "fail": [r[key] for r in aligned if not r["alignment_pass"]]}
        _hist(axes[0], split(cos_key), th["alignment"]["cos_threshold"],
              f"cosine ({th['alignment']['cosine']}) corpus vs ASR", "cosine similarity")
        _hist(axes[1], split("align_lev"), th["alignment"]["lev_threshold"],
              "normalised Levenshtein similarity", "similarity")
        colours = {"pass": "#4f81bd", "misaligned": "#c0504d", "incomplete": "#f79646",
                   "asr_empty": "#8064a2", "unverified": "#9bbb59"}
        for status in sorted({r["alignment_status"] for r in aligned}):
            pts = [r for r in aligned if r["alignment_status"] == status]
            axes[2].scatter([r[cos_key] for r in pts], [r["align_lev"] for r in pts], s=8,
                            alpha=0.6, label=f"{status} ({len(pts)})", color=colours.get(status))
        axes[2].axvline(th["alignment"]["cos_threshold"], color="k", linestyle="--", linewidth=1)
        axes[2].axhline(th["alignment"]["lev_threshold"], color="k", linestyle="--", linewidth=1)
        axes[2].set_xlabel("cosine")
        axes[2].set_ylabel("Levenshtein")
        axes[2].set_title("alignment outcome")
        axes[2].legend(fontsize=7)
        out["alignment_scores"] = _png(fig)

        buckets = [b for b in data["alignment_by_length"] if b["n"]]
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        x = np.arange(len(buckets))
        for k, rule in enumerate(("paper", "length_aware")):
            axes[0].bar(x + (k - 0.5) * 0.38, [b[f"pass_rate_{rule}"] for b in buckets], 0.38,
                        label=rule)
        axes[0].set_xticks(x, [f"{b['bucket']}\n(n={b['n']})" for b in buckets])
        axes[0].set_ylim(0, 1.05)
        axes[0].set_title("alignment pass rate by transcript length (words)")
        axes[0].legend(fontsize=8)
        data_by = [[r[cos_key] for r in aligned if r["length_bucket"] == b["bucket"]] for b in buckets]
        lev_by = [[r["align_lev"] for r in aligned if r["length_bucket"] == b["bucket"]] for b in buckets]
        axes[1].boxplot(data_by, positions=x - 0.2, widths=0.35, patch_artist=True,
                        boxprops={"facecolor": "#4f81bd"})
        axes[1].boxplot(lev_by, positions=x + 0.2, widths=0.35, patch_artist=True,
                        boxprops={"facecolor": "#f79646"})
        axes[1].set_xticks(x, [b["bucket"] for b in buckets])
        axes[1].set_title("scores by length: cosine (blue), Levenshtein (orange)")
        out["alignment_by_length"] = _png(fig)

    judged = [r for r in rows if r.get("align_word_errors") is not None and r["n_words"]
              and r["n_asr_words"]]
    if judged and th.get("word_error_limits"):
        fig, axes = plt.subplots(1, 2, figsize=(13, 4))
        rng = np.random.default_rng(0)  # jitter: word counts and errors are integers
        for status in sorted({r["alignment_status"] for r in judged}):
            pts = [r for r in judged if r["alignment_status"] == status]
            axes[0].scatter([r["n_words"] + rng.uniform(-0.25, 0.25) for r in pts],
                            [r["align_word_errors"] + rng.uniform(-0.2, 0.2) for r in pts],
                            s=8, alpha=0.6, label=f"{status} ({len(pts)})")
        limits = sorted((int(k), v) for k, v in th["word_error_limits"].items() if int(k) > 0)
        axes[0].step([k for k, _ in limits], [v + 0.5 for _, v in limits], where="mid",
                     color="k", linewidth=1, label="word error limit")
        axes[0].set_xlabel("transcript words")
        axes[0].set_ylabel("word errors (ASR vs transcript)")
        axes[0].set_xlim(0, min(40, max(k for k, _ in limits) + 1))
        axes[0].set_ylim(-0.5, min(40, max(r["align_word_errors"] for r in judged) + 1))
        axes[0].set_title("word errors against the limit the corpus's ASR error sets")
        axes[0].legend(fontsize=7)
        rates = [r["speech_log_rate"] for r in judged if r.get("speech_log_rate") is not None]
        if rates:
            by = defaultdict(list)
            for r in judged:
                if r.get("speech_log_rate") is not None:
                    by[r["alignment_status"]].append(r["speech_log_rate"])
            bins = np.linspace(min(rates + [th["log_rate"][0]]) - 0.1,
                               max(rates + [th["log_rate"][1]]) + 0.1, 41)
            _status_hist(axes[1], dict(sorted(by.items())), bins,
                         [(value, f"{name} {value:.2f}")
                          for value, name in zip(th["log_rate"], ("too short", "too long"))],
                         "speaking rate: clips too short or too long for their text",
                         "log voiced seconds per syllable of the transcript")
        out["calibrated_alignment"] = _png(fig)

    face_sims = [r for r in rows if r["face_best_sim"] is not None]
    speaker_sims = [r for r in rows if r.get("speaker_z") is not None]
    if face_sims or speaker_sims:
        fig, axes = plt.subplots(1, 3, figsize=(18, 4))
        if face_sims:
            by = defaultdict(list)
            for r in face_sims:
                by[r["face_status"]].append(r["face_best_sim"])
            _hist(axes[0], dict(by), th["face"], "best face similarity to the speaker's reference",
                  "cosine similarity")
        if speaker_sims:
            by = defaultdict(list)
            for r in speaker_sims:
                by[r["speaker_status"]].append(r["speaker_z"])
            low = min(-12.0, *(min(v) for v in by.values()))
            bins = np.linspace(max(low, -30.0), max(5.0, *(max(v) for v in by.values())), 50)
            names = ("unlike its label",)
            _status_hist(axes[1], dict(sorted(by.items())), bins,
                         [(value, f"{name}: {value:g}") for value, name in zip(th["speaker_z"], names)],
                         "voice: robust sds from its label's median (leave-one-out)",
                         "robust standard deviations (centred embeddings)")
            gaps = defaultdict(list)
            for r in speaker_sims:
                if r.get("speaker_gap") is not None:
                    gaps[r["speaker_status"]].append(r["speaker_gap"])
            if gaps:
                _hist(axes[2], dict(gaps), th["speaker_closer"],
                      "voice: closer to another label's utterances than to its own",
                      "similarity to another label's nearest utterances minus to its own")
        out["identity_scores"] = _png(fig)

    for key, title in (("by_split", "split"), ("by_emotion", "emotion")):
        table = data[key]
        fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(table) + 2), 3.5))
        names = [str(t[title]) for t in table]
        ax.bar(names, [t["kept"] for t in table], label="kept", color="#4f81bd")
        ax.bar(names, [t["removed"] for t in table], bottom=[t["kept"] for t in table],
               label="removed", color="#c0504d")
        ax.set_title(f"kept and removed per {title}")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", rotation=30)
        out[f"kept_{key}"] = _png(fig)
    return out


# -- HTML ---------------------------------------------------------------------------------

def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p><i>none</i></p>"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)

    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, list):
            return esc(", ".join(str(x) for x in v))
        return esc("" if v is None else str(v))

    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _removal_table(data: dict, key: str) -> str:
    header, rows = removal_rows(data, key)
    return _table([dict(zip(header, row)) for row in rows], header)


def _reviewed(reviewed: dict | None) -> str:
    """The reviewed relabels applied, and their lines naming nothing of the table."""
    if not reviewed:
        return ""
    unknown = [*reviewed.get("unknown_utterances", []), *reviewed.get("unknown_speakers", [])]
    text = (f"Reviewed relabels given: {reviewed['utterances']} utterance(s), "
            f"{reviewed['labels']} label(s)")
    if unknown:
        text += (f"; {len(unknown)} name nothing in the utterance table (not applied): "
                 + ", ".join(unknown[:20]) + (", ..." if len(unknown) > 20 else ""))
    return f"<p>{esc(text)}.</p>"


def render_html(data: dict, images: dict[str, bytes]) -> str:
    def img(name: str) -> str:
        if name not in images:
            return ""
        encoded = base64.b64encode(images[name]).decode()
        return f'<img alt="{name}" src="data:image/png;base64,{encoded}">'

    th = data["thresholds"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>erc QC report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;"
        "padding:2px 6px;font-size:13px;text-align:left}th{background:#eee}"
        "img{max-width:100%;margin:0.5em 0}</style></head><body>",
        "<h1>Quality control report</h1>",
        f"<p><b>{data['input']}</b> utterances in, <b>{data['kept']}</b> kept, "
        f"<b>{data['removed']}</b> removed ({100 * data['removed'] / max(data['input'], 1):.1f} %). "
        "Nothing is deleted: decisions.parquet annotates every utterance and utterances.parquet "
        "is the kept view.</p>",
        "<h2>Removed, by first reason</h2>",
        "<p>Each removed utterance counts once, under its first failure (features, alignment, "
        "face, speaker); these add up to the number removed.</p>",
        _table([{"reason": k, "utterances": v} for k, v in data["removed_by_first_reason"].items()]
               + [{"reason": "total removed", "utterances": data["removed"]}]),
        img("removed_by_reason"),
        "<h2>Failures per check</h2><p>An utterance failing several checks counts under each.</p>",
        _table([{"check": c, "failed": v} for c, v in data["failed_by_check"].items()]
               + [{"check": "features (failed or missing)", "failed": data["failed_features"]}]),
        _table([{"check": c, **{"status": s, "utterances": n}}
                for c, counts in data["status_counts"].items() for s, n in counts.items()],
               ["check", "status", "utterances"]),
        "<h2>Audio-text alignment</h2>",
        f"<p>Rule <b>{th['alignment']['rule']}</b>: keep when cosine ({th['alignment']['cosine']}) "
        f"&gt; {th['alignment']['cos_threshold']} and Levenshtein &gt; "
        f"{th['alignment']['lev_threshold']}"
        + (f"; transcripts of at most {th['alignment']['short_words']} words need only one of them"
           if th["alignment"]["rule"] == "length_aware" else "")
        + (f"; incomplete when the ASR recovers under {th['alignment']['min_coverage']:.0%} of "
           "the words" if th["alignment"]["min_coverage"] else "")
        + ("; then word errors above the corpus's limit for the transcript's length, and "
           "clips truncated (transcript words lost at a cut end) or holding extra speech "
           "(ASR words and voiced audio beyond the transcript)"
           if th["alignment"]["rule"] == "calibrated" else "") + ".</p>",
        img("alignment_scores"),
        "<h3>Thresholds learned from this corpus</h3>",
        "<p>Where the corpus is large enough, thresholds come from its own score "
        "distributions (<i>default</i>: too little data, the fixed default is used). The word "
        "error limit of an n-word transcript is the most errors the ASR's clean error rate "
        "explains (chance at least 1 in 100); the speaking-rate limits are the corpus's "
        "typical range.</p>",
        _table(data["calibration"], ["threshold", "value", "source", "why"]),
        img("calibrated_alignment"),
        "<h3>By transcript length</h3><p>Pass rates under both rules, whichever decides.</p>",
        _table(data["alignment_by_length"]),
        img("alignment_by_length"),
        "<h2>Face and speaker identity</h2>",
        f"<p>Face match threshold {th['face']}. Each voice is compared with its nearest "
        f"utterances of every label (itself left out): other speaker when another label's "
        f"come closer than its own by more than "
        f"{th['speaker_closer'] if th['speaker_closer'] is None else round(th['speaker_closer'], 3)} "
        f"(the corpus's own speakers come that close rarely: the upper tail of their "
        f"component, see the thresholds table); unlike its label below "
        f"{th['speaker_z'][0] if th['speaker_z'] else '-'} robust sds of the label's own "
        f"range; two voices of one person above {th['speaker_same_person']}; labels equal "
        f"but for case and spaces are one speaker by name.</p>",
        img("identity_scores"),
        _table([{"item": k, "value": v} for k, v in data["face"].items()]),
        "<h3>Speaker labels: conflated names and aliases</h3>",
        _table(data["relabels"]["label_findings"],
               ["kind", "modality", "label", "utterances", "proposal", "detail"]),
        f"<p>Relabel proposals: {data['relabels']['proposed']} utterances "
        f"({', '.join(f'{k} {v}' for k, v in data['relabels']['by_reason'].items()) or 'none'}); "
        f"applied: {data['relabels']['applied']}. See relabels.csv.</p>",
        _reviewed(data["relabels"].get("reviewed")),
        "<h2>Per split</h2>", _removal_table(data, "split"), img("kept_by_split"),
        "<h2>Per emotion</h2>", _removal_table(data, "emotion"), img("kept_by_emotion"),
        "<h2>Per speaker</h2>", _removal_table(data, "speaker"),
        "<h2>Example failures</h2>",
    ]
    for reason, examples in data["examples"].items():
        parts += [f"<h3>{esc(reason)}</h3>", _table(examples)]
    parts += ["<h2>Models and inputs</h2>",
              _table(data["models"]) if data["models"] else "<p><i>no model records</i></p>",
              _table([{"item": k, "value": v} for k, v in data["inputs"].items()]),
              "</body></html>"]
    return "\n".join(parts)


def write_report(result) -> dict:
    """Writes report.json, report.html and plots/*.png into the result's folder."""
    out = Path(result.out_dir)
    data = report_data(result.decisions, result.summary)
    images = plots(result.decisions, data)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name, png in images.items():
        io.write_bytes(out / "plots" / f"{name}.png", png)
    io.write_json(out / "report.json", data)
    io.write_text(out / "report.html", render_html(data, images))
    return {"html": str(out / "report.html"), "json": str(out / "report.json"),
            "plots": sorted(images)}
