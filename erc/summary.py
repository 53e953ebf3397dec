"""Summaries a person reads after ingest: counts per split, emotion and speaker, and the
problems by reason. The same numbers go to JSON for machines."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from erc.corpus.base import IngestResult
from erc.errors import printable
from erc.schema import problem_reasons


def summarise(result: IngestResult) -> dict:
    u = result.utterances
    splits = u.column("split").to_pylist()
    dialogues = list(zip(splits, u.column("dialogue_id").to_pylist()))
    emotions = u.column("emotion").to_pylist()
    speakers = u.column("speaker").to_pylist()
    per_split = {}
    for split in sorted(set(splits)):
        rows = [i for i, s in enumerate(splits) if s == split]
        per_split[split] = {
            "utterances": len(rows),
            "dialogues": len({dialogues[i] for i in rows}),
            "speakers": len({speakers[i] for i in rows}),
            # a separate audio file alone (a folder of wavs) is media too, as preprocessing reads it
            "with_media": sum(1 for i in rows if u.column("media_path")[i].is_valid
                              or u.column("audio_path")[i].is_valid),
            "emotions": dict(Counter(emotions[i] or "(none)" for i in rows).most_common()),
        }
    p = result.problems
    return {
        "input_rows": result.n_input,
        "kept": u.num_rows,
        "problems": p.num_rows,
        # the problem rows name it too: a corpus whose every row was set aside is named
        "corpora": sorted(set(u.column("corpus").to_pylist()) | set(p.column("corpus").to_pylist())),
        "splits": per_split,
        "emotions": sorted({e for e in emotions if e}),
        "speakers": len(set(speakers)),
        "top_speakers": dict(Counter(speakers).most_common(10)),
        "problems_by_reason": dict(problem_reasons(p).most_common()),
        "problems_by_split": dict(Counter(s or "(none)" for s in p.column("split").to_pylist())),
        "repairs": dict(result.repairs),
        # where each split's rows took their split from (a manifest's), and the reader's notes
        "split_sources": {split: dict(found.most_common())
                          for split, found in sorted(result.split_sources.items())},
        "notes": list(result.notes),
    }


def _table(header: list[str], rows: list[list]) -> str:
    header = [printable(cell) for cell in header]  # split and emotion names
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(str(x)) for x in [h] + [r[i] for r in rows]) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def summary_line(s: dict) -> str:
    """The summary in one line: rows in, kept and set aside, utterances per split."""
    splits = ", ".join(f"{k} {v['utterances']:,}" for k, v in s["splits"].items())
    return (f"{s['input_rows']:,} input rows -> {s['kept']:,} utterances kept, "
            f"{s['problems']:,} set aside  ({splits}; {len(s['emotions'])} emotions, "
            f"{s['speakers']:,} speakers)")


def format_summary(s: dict) -> str:
    splits = list(s["splits"])
    # Names come from the corpus: printed with their control characters escaped, a
    # speaker holding a newline or an ESC neither breaks the table nor drives the terminal.
    out = [f"{s['input_rows']:,} input rows -> {s['kept']:,} utterances kept, "
           f"{s['problems']:,} set aside  (corpus: {printable(', '.join(s['corpora'])) or '-'})", ""]
    out.append(_table(["split", "utterances", "dialogues", "speakers", "with media"],
                      [[k, f"{v['utterances']:,}", f"{v['dialogues']:,}", v["speakers"],
                        f"{v['with_media']:,}"] for k, v in s["splits"].items()]))
    emotions = sorted({e for v in s["splits"].values() for e in v["emotions"]})
    out += ["", f"{len(s['emotions'])} emotions:",
            _table(["emotion"] + splits,
                   [[e] + [f"{s['splits'][k]['emotions'].get(e, 0):,}" for k in splits]
                    for e in emotions])]
    top = ", ".join(f"{printable(name)} {n:,}" for name, n in s["top_speakers"].items())
    out += ["", f"{s['speakers']:,} speakers; most frequent: {top}"]
    if s["problems_by_reason"]:
        out += ["", "problems by reason:",
                _table(["reason", "rows"], [[r, f"{n:,}"] for r, n in s["problems_by_reason"].items()])]
    else:
        out += ["", "no problem rows"]
    for what, n in s["repairs"].items():
        out.append(f"repaired and kept: {n:,} rows ({what})")
    if s.get("split_sources"):
        out += ["", "splits from:"]
        out += [printable(f"  {split}: " + ", ".join(f"{where} ({n:,} rows)"
                                                   for where, n in found.items()))
                for split, found in s["split_sources"].items()]
    out += ["", *(f"note: {printable(note)}" for note in s.get("notes", []))] if s.get("notes") else []
    return "\n".join(out)


def problems_preview(problems: pa.Table, limit: int = 5) -> str:
    rows = problems.slice(0, limit).to_pylist()
    return "\n".join(printable(f"  {r['reason']}: {r['source']}" + (f":{r['line']}" if r["line"] else "")
                               + f"  {r['detail']}") for r in rows)
