"""DailyDialog (Li et al. 2017): written two-party dialogues, one per line of
``dialogues_text.txt``, turns separated by ``__eou__``, with the parallel
``dialogues_emotion.txt`` (one label id per turn) and ``dialogues_act.txt`` (one dialogue
act per turn). The release's split folders ``train/``, ``validation/`` and ``test/`` hold
``dialogues_{split}.txt``, ``dialogues_emotion_{split}.txt`` and ``dialogues_act_{split}.txt``
(``validation`` is read as split ``dev``); without them, the top-level files (the whole
corpus) are read as split ``train`` (``erc train --select-fraction`` then stops early on a
slice of its dialogues).

Known quirks handled here:
- no speaker names: the two parties alternate, so turn t is speaker A (even) or B (odd) of
  its dialogue (speaker ``<split>/<n>/A``: different people in each dialogue);
- emotion ids 0-6: 0 is "no emotion" (read as neutral), the others MELD's names
  (happiness -> joy); the act ids 1-4 go to ``meta.act``;
- a dialogue whose emotion line counts other turns than its text line: the labels cannot
  be matched to turns, so each of its turns is a ``malformed_row`` problem;
- an act line that does not match its dialogue (other turn count, not ids 1-4, missing):
  the turns are kept without ``meta.act`` (their emotions are sound), counted as repairs;
- a line missing from the emotion file (the text file is longer): its turns are problems;
  an emotion (or act) file longer than the text file is a note of the ingest (the files
  may not be one release's);
- an empty turn (``a __eou__ __eou__``): a ``missing_field`` problem, its label not shifted
  onto the next turn;
- text tokenised with spaces before punctuation (``Say , Jim``): kept as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erc.corpus.base import (
    CorpusError,
    IngestResult,
    ReaderOptions,
    RowCollector,
    check_file,
    read_lines,
    reader_options,
    too_large,
)
from erc.errors import preview

ACT_LEFT_OUT = "dailydialog act line does not match its dialogue's turns: act left out"
EMOTIONS = ("neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise")  # by id 0-6
ACTS = ("inform", "question", "directive", "commissive")  # by id 1-4
SPLIT_FOLDERS = {"train": "train", "dev": "validation", "test": "test"}
END_OF_UTTERANCE = "__eou__"


@dataclass
class DailyDialogOptions(ReaderOptions):
    """The DailyDialog reader's options."""
    splits: list[str] | None = None  # read only these splits (train, dev, test)


def _files(path: Path) -> dict[str, tuple[Path, Path, Path]]:
    """{split: (text, emotion, act files)}: the split folders' when there are any, else
    the top-level files as ``train``."""
    found = {}
    for split, folder in SPLIT_FOLDERS.items():
        files = (path / folder / f"dialogues_{folder}.txt",
                 path / folder / f"dialogues_emotion_{folder}.txt",
                 path / folder / f"dialogues_act_{folder}.txt")
        for file in files:
            check_file(file)
        if files[0].is_file():
            found[split] = files
    if not found:
        files = (path / "dialogues_text.txt", path / "dialogues_emotion.txt",
                 path / "dialogues_act.txt")
        for file in files:
            check_file(file)
        if files[0].is_file():
            found["train"] = files
    return found


def looks_like(path: Path) -> bool:
    return path.is_dir() and bool(_files(path))


def _turns(line: str) -> list[str]:
    """The turns of one dialogue line: ``a __eou__ b __eou__`` -> [a, b]."""
    parts = [p.strip() for p in line.split(END_OF_UTTERANCE)]
    if parts and not parts[-1]:
        parts.pop()  # after the last marker
    return parts


def _ids(line: str, names: tuple[str, ...], first: int) -> list[str] | None:
    """The labels of one emotion / act line (ids from ``first``), None when one is not."""
    labels = []
    for token in line.split():
        if not (token.isascii() and token.isdigit()) or not 0 <= int(token) - first < len(names):
            return None
        labels.append(names[int(token) - first])
    return labels


def read_dailydialog(path: Path, /, **options) -> IngestResult:
    """Reads DailyDialog's text and label files; ``options`` are DailyDialogOptions fields."""
    opts = reader_options(DailyDialogOptions, options, "dailydialog")
    path = Path(path)
    files = _files(path) if path.is_dir() else {}
    if not files:
        raise CorpusError(f"{path}: no DailyDialog dialogues_text.txt, nor split folders "
                          f"({', '.join(f'{f}/dialogues_{f}.txt' for f in SPLIT_FOLDERS.values())}); "
                          f"extract the release's train.zip, validation.zip and test.zip there")
    unknown = sorted(set(opts.splits or ()) - set(SPLIT_FOLDERS))
    if unknown:
        raise CorpusError(f"reader options of dailydialog: splits: {preview(unknown)} are not "
                          f"DailyDialog splits ({', '.join(SPLIT_FOLDERS)})")
    out = RowCollector("dailydialog")
    for split, (text_file, emotion_file, act_file) in files.items():
        if opts.splits and split not in opts.splits:
            continue
        if not emotion_file.is_file():
            raise CorpusError(f"{emotion_file}: missing (the emotion labels of {text_file})")
        out.sources += [str(text_file), str(emotion_file)]
        emotions = read_lines(emotion_file, lf_only=True)
        acts = read_lines(act_file, lf_only=True) if act_file.is_file() else []
        if acts:
            out.sources.append(str(act_file))
        texts = read_lines(text_file, lf_only=True)
        for n, (line, encoding) in enumerate(texts):
            if not line.strip():
                continue  # a blank line (the file's last) holds no dialogue
            _read_dialogue(out, split, n, line, encoding, emotions, acts, text_file, opts)
        dialogues = sum(1 for line, _ in texts if line.strip())
        for labels, file in ((emotions, emotion_file), (acts, act_file)):
            extra = sum(1 for line, _ in labels if line.strip()) - dialogues
            if extra > 0:  # lines of dialogues the text file lacks: not one release's files?
                out.notes.append(f"{file}: {extra:,} more line(s) than {text_file} has dialogues; "
                                 f"check that the two files belong together")
    return out.result()


def _read_dialogue(out: RowCollector, split: str, n: int, line: str, encoding: str | None,
                   emotions: list, acts: list, text_file: Path, opts: DailyDialogOptions) -> None:
    """Keeps (or sets aside) the turns of dialogue ``n`` (line n + 1 of ``text_file``)."""
    turns = _turns(line)
    dialogue = str(n)
    labels = _ids(emotions[n][0], EMOTIONS, 0) if n < len(emotions) else None
    act_labels = _ids(acts[n][0], ACTS, 1) if n < len(acts) else None
    if labels is None:
        why = ("no line in the emotion file" if n >= len(emotions) else
               f"emotion line {preview(emotions[n][0], 40)} is not ids 0-6")
    elif len(labels) != len(turns):
        why = f"{len(turns)} turns but {len(labels)} emotion labels"
    else:
        why = None
    for turn, text in enumerate(out.rows(turns)):
        uid = f"dailydialog/{split}/{dialogue}/{turn}"
        where = dict(source=str(text_file), line=n + 1, split=split, utterance_id=uid)
        if why:
            out.reject("malformed_row", f"dialogue on line {n + 1}: {why}", **where)
        elif not text:  # "a __eou__ __eou__": a turn of no words, no utterance to keep
            out.reject("missing_field", f"dialogue on line {n + 1}: turn {turn} is empty "
                       f"(two {END_OF_UTTERANCE} markers with nothing between)", **where)
        elif encoding == "undecodable":
            out.reject("bad_encoding", "bytes neither UTF-8 nor cp1252", **where)
        elif too_large(text, opts.max_field_bytes):
            out.reject("field_too_large", f"turn over {opts.max_field_bytes} bytes", **where)
        else:
            if encoding:
                out.repairs["dailydialog text decoded as cp1252"] += 1
            party = "AB"[turn % 2]
            meta = {"party": party}
            if act_labels is not None and len(act_labels) == len(turns):
                meta["act"] = act_labels[turn]
            elif acts:  # an act file, but no act of this turn in it: kept without one
                out.repairs[ACT_LEFT_OUT] += 1
            out.add({"utterance_id": uid, "split": split, "dialogue_id": dialogue, "turn": turn,
                     "speaker": f"{split}/{dialogue}/{party}", "text": text,
                     "emotion": labels[turn], "meta": meta},
                    source=str(text_file), line=n + 1)
