"""The main job (``erc run``): the list of stages over one run folder.

    corpus/      ingest       utterances.parquet, problems.parquet
    features/    preprocess   part-*.parquet (Ray Data pass)
    qc/          qc           decisions.parquet, utterances.parquet (kept), report.html
    adapters/    adapters     speaker/model, face/model (identity -> emotion MLPs)
    text/        text         model/, history.json (the text encoder fine-tuned, when the
                              fusion model's text tokens are ``finetuned``)
    train/       train        model/, history.json, ray/ (fusion model, Ray Train)
    eval-SPLIT/  evaluate     metrics.json, predictions.parquet, confusion.png
    report.html  report       everything above on one page
    run.json                  what the last `erc run` did (settings, stages run or skipped)

Each stage runs through ``erc.stages.base.execute``: it is skipped when its output is up
to date with its settings and inputs, so a second run does nothing, an interrupted one
resumes, and a changed setting or upstream output recomputes exactly the stages downstream
of it. ``plan`` says, without running anything, which stages are stale and why;
``first``/``last`` run a slice of the list (``erc run --from qc --until train``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erc import io
from erc.errors import ConfigError, InputError
from erc.recipes import RunConfig
from erc.stages.base import (
    Stage,
    StageResult,
    check_not_adopting_input,
    check_outputs,
    execute,
    read_manifest,
    up_to_date,
)
from erc.stages.ingest import IngestStage, not_the_corpus
from erc.stages.layout import Layout
from erc.stages.preprocess import PreprocessStage
from erc.stages.qc import QCStage
from erc.stages.report import ReportStage, report_inputs
from erc.stages.train import (
    IDENTITY,
    AdapterJob,
    AdaptersStage,
    EvalJob,
    EvaluateStage,
    FusionJob,
    FusionStage,
    TextJob,
    TextStage,
    adapter_models,
)

STAGES = ("ingest", "preprocess", "qc", "adapters", "text", "train", "evaluate", "report")
RUN_RECORD = "run.json"
UNFINISHED = "did not finish: still running, or stopped without a word (killed)"
RUN_LOG = "run.log"  # everything the run printed and logged, also what the console left out


@dataclass
class Step:
    """One stage of the main job, ready to run: the stage, its settings, inputs, folder."""
    name: str  # the step's name in STAGES (evaluate has one step per split)
    stage: Stage
    config: Any
    inputs: dict[str, Path | None]
    out: Path
    label: str = ""


def feature_spec(features: Path, modalities: list[str], adapters: dict[str, Path],
                 text_model: Path | None = None, text_tokens: str = "frozen",
                 text_layers: int = 1) -> dict:
    """What the fusion model of the main job reads: the pass's text vectors (its
    ``text_layers`` column when the pass wrote the last layers, else the sentence vectors;
    or the vectors of the fine-tuned ``text_model``, or both: ``text_tokens``), speaker
    embeddings and faces, each identity modality through its adapter when there is one."""
    frozen = {"kind": "parquet", "path": str(features),
              "column": "text_layers" if text_layers > 1 else "text_embedding"}
    spec = {}
    for modality in modalities:
        if modality == "text" and text_model is not None:
            spec["text"] = {"kind": "finetuned", "path": str(text_model)}
            if text_tokens == "both":
                spec["text2"] = frozen
        elif modality == "text":
            spec["text"] = frozen
        elif modality == "speaker":
            spec["speaker"] = {"kind": "parquet", "path": str(features), "column": IDENTITY["speaker"]}
        else:
            spec["face"] = {"kind": "faces", "path": str(features)}
        if modality in adapters:
            spec[modality]["adapter"] = str(adapters[modality])
    return spec


def configured_stages(config: RunConfig) -> list[str]:
    """The stages of ``STAGES`` the main job runs for ``config``, in order."""
    train = config.train
    names = ["ingest", "preprocess"] + (["qc"] if config.qc.enabled else [])
    if train.enabled:
        if train.adapters == "train_split" and any(m in IDENTITY for m in train.modalities):
            names.append("adapters")
        if train.text_tokens in ("finetuned", "both") and "text" in train.modalities:
            names.append("text")
        names += ["train", "evaluate"]
    return names + ["report"]


def steps(config: RunConfig, say: Callable[[str], None]) -> Iterator[Step]:
    """The main job's steps in order. A step is built when the previous ones have run,
    since what training reads depends on what they produced."""
    from erc.train.data import chosen_split
    from erc.train.vectors import spec_paths

    where = Layout(config)
    stages = configured_stages(config)
    yield Step("ingest", IngestStage(), config.corpus, {}, where.corpus,
               str(config.corpus.path))
    _kept_any(where.corpus)
    yield Step("preprocess", PreprocessStage(config.ray), config.preprocess,
               {"utterances": where.corpus}, where.features, f"profile {config.preprocess.profile}")
    if "qc" in stages:
        yield Step("qc", QCStage(), config.qc.checks,
                   {"features": where.features, "utterances": where.corpus}, where.qc,
                   "alignment, face and speaker checks")
    train = config.train
    if "train" not in stages:
        return
    utterances = where.utterances()
    if "adapters" in stages:
        identity = [m for m in train.modalities if m in IDENTITY]
        yield Step("adapters", AdaptersStage(),
                   AdapterJob(identity, train.adapter_training, train.recipe.splits.train_split,
                              train.recipe.splits.select_fraction),
                   {"utterances": utterances, "features": where.features}, where.adapters,
                   f"identity -> emotion MLPs on the {train.recipe.splits.train_split} split")
    adapters = adapter_models(where.adapters) if "adapters" in stages else {}
    text_model = None
    if "text" in stages:
        from erc.train.vectors import resolve_text_encoder

        text = dataclasses.replace(train.text_training, splits=train.recipe.splits)
        yield Step("text", TextStage(config.ray.address), TextJob(text),
                   {"utterances": utterances, "encoder": Path(resolve_text_encoder(text.encoder))},
                   where.text, f"{text.encoder} fine-tuned for emotion on Ray Train "
                               f"({text.model.inputs} inputs)")
        text_model = where.text / "model"
    spec, features = _available(config, where, adapters, say, text_model)
    yield Step("train", FusionStage(config.ray.address, features),
               FusionJob(train.recipe, spec),
               {"utterances": utterances, **spec_paths(spec)}, where.train,
               f"{train.recipe.model.mixer} fusion on Ray Train "
               f"({train.recipe.loop.num_workers} worker(s)); modalities: {', '.join(spec)}")
    present = _splits(utterances)
    splits = train.recipe.splits
    chosen_on = chosen_split(splits.dev_split, splits.select_fraction, present)
    for split in train.eval_splits:
        if split not in present:
            say(f"  {split}: {_absent(split, where)}, not evaluated")
            continue
        # the split early stopping (and the candidate choice) read scores the model at its
        # best on it: said, so that it is not quoted as a held-out figure
        label = (f"{split} (training chose on it: an optimistic figure, not a held-out one)"
                 if split == chosen_on else split)
        yield Step("evaluate", EvaluateStage(),
                   EvalJob(split, title=f"{train.recipe.model.mixer} fusion on {split}"),
                   {"utterances": utterances, **EvaluateStage.model_inputs([where.train / "model"])},
                   where.evaluation(split), label)


def _kept_any(corpus: Path) -> None:
    """InputError when the ingest set every input row aside: the stages after it would
    fail on an empty table, far from the cause (an ingest not run yet is no error here)."""
    import pyarrow.parquet as pq

    from erc.artifacts import PROBLEMS, UTTERANCES
    from erc.schema import problem_reasons, said_reasons

    utterances = corpus / UTTERANCES
    if not utterances.is_file() or pq.read_metadata(utterances).num_rows:
        return
    reasons = problem_reasons(pq.read_table(corpus / PROBLEMS, columns=["reason"]))
    raise InputError(f"{corpus}: the ingest kept no utterance: all {sum(reasons.values()):,} "
                     f"input row(s) were set aside ({said_reasons(reasons)}); {PROBLEMS} names "
                     f"each with its file, line and reason")


def _splits(utterances: Path) -> set[str]:
    import pyarrow.parquet as pq

    return set(pq.read_table(utterances, columns=["split"]).column("split").to_pylist())


def _absent(split: str, where: Layout) -> str:
    """Why the table training reads has no utterance of ``split``: QC set them all aside,
    or the corpus has no such split (a name mistyped in the config)."""
    corpus = _splits(where.corpus / "utterances.parquet")
    if split in corpus and where.qc_enabled:
        return f"QC set aside every utterance of it{_qc_reasons(split, where)}"
    return f"no such split in the corpus (splits there: {', '.join(sorted(corpus))})"


def _qc_reasons(split: str, where: Layout) -> str:
    """" (N: the first failed check and its count, ...; PROBLEMS lists each)" for the
    utterances of ``split`` QC set aside ("" where QC's problem table is not there)."""
    from collections import Counter

    from erc.artifacts import PROBLEMS, problems_beside
    from erc.schema import said_reasons

    problems = problems_beside(where.utterances())
    if problems is None:
        return ""
    checks = Counter((detail or "").split(",")[0] for detail, s, reason in zip(
        *(problems.column(c).to_pylist() for c in ("detail", "split", "reason")))
        if s == split and reason == "qc_rejected")
    return (f" ({sum(checks.values()):,}: {said_reasons(checks)}; {where.qc / PROBLEMS} lists "
            f"each)") if checks else ""


def _available(config: RunConfig, where: Layout, adapters: dict, say,
               text_model: Path | None = None) -> tuple[dict, dict]:
    """The feature spec of the configured modalities that have features (a corpus without
    media has no speaker or face vectors: those are left out, with a message)."""
    from erc.artifacts import read_utterances
    from erc.train.vectors import load_features

    train = config.train
    table = read_utterances(where.utterances())
    present = set(table.column("split").to_pylist())
    splits = train.recipe.splits
    wanted = [splits.train_split] + ([splits.dev_split] if splits.select_fraction is None else [])
    missing = [s for s in wanted if s not in present]
    if missing:
        raise InputError(f"train: split {missing[0]!r}: {_absent(missing[0], where)}")
    spec = feature_spec(where.features, train.modalities, adapters, text_model, train.text_tokens,
                        config.preprocess.text_layers)
    vectors = load_features(spec, table)
    for modality in [m for m in spec if not vectors[m]]:
        say(f"  {modality}: no embeddings in {where.features} (no media?): left out of the model")
        del spec[modality], vectors[modality]
    if not spec:
        raise ConfigError(f"train: none of the modalities {train.modalities} has features")
    return spec, vectors


# The step and stage that write each folder of ``Layout.folders`` (eval-*: evaluate).
WRITERS: dict[str, tuple[str, type[Stage]]] = {
    "corpus": ("ingest", IngestStage), "features": ("preprocess", PreprocessStage),
    "qc": ("qc", QCStage), "adapters": ("adapters", AdaptersStage), "text": ("text", TextStage),
    "train": ("train", FusionStage)}


def check_run_outputs(config: RunConfig, first: str | None = None, last: str | None = None,
                      overwrite: bool = False) -> None:
    """OwnershipError naming a file of the user's where a stage of this run (``first``..
    ``last``) or the run itself writes, or where a stage's folder goes (what ``io.claim``
    refuses), before its first stage computes anything: each
    stage checks its own folder as it starts, but a file in a later stage's folder would
    stop the run only after the work of the stages before. It writes nothing (the run's
    folder is claimed after it): a refused run leaves the folder as it found it."""
    io.check_claim(config.output_dir, overwrite)
    # preprocess.output_dir names any folder: another stage's (or the run's own, where the
    # report goes) stopped the run only when that stage came to it, after the work before
    writers = {Path(config.output_dir).resolve(): "report"}
    for name, folder in Layout(config).folders().items():
        step = WRITERS.get(name, ("evaluate", EvaluateStage))[0]
        other = writers.setdefault(folder.resolve(), step)
        if other != step:
            raise ConfigError(f"{folder}: the output folder of both the {other} and the {step} "
                              f"stage; each stage writes a folder of its own (preprocess.output_dir)")
    corpus = Path(config.corpus.path)
    if overwrite and corpus.exists():
        check_not_adopting_input("corpus", corpus, Path(config.output_dir))
    not_the_corpus(config.corpus, Path(config.output_dir))  # its run.json read as a manifest
    for name, folder in Layout(config).folders().items():
        step, stage = WRITERS.get(name, ("evaluate", EvaluateStage))
        not_the_corpus(config.corpus, folder)
        if selected(step, first, last):
            io.check_claim(folder, overwrite)  # a file where it goes, a folder of the user's
            check_outputs(stage, folder, overwrite)
            if overwrite and corpus.exists():  # preprocess.output_dir a folder of the corpus
                check_not_adopting_input("corpus", corpus, folder)
    report = ReportStage.outputs() if selected("report", first, last) else ()
    io.check_outputs(config.output_dir, (RUN_RECORD, RUN_LOG, *report))


def selected(name: str, first: str | None, last: str | None) -> bool:
    index = STAGES.index(name)
    return ((first is None or index >= STAGES.index(first))
            and (last is None or index <= STAGES.index(last)))


def plan(config: RunConfig, first: str | None = None,
         last: str | None = None) -> list[tuple[str, str, str]]:
    """(stage, folder, state) for each stage, without running anything: "up to date", or
    why it would run. A stage after one that would run may become stale when that one's
    output changes: it says so. A stage outside ``first``..``last`` says it is left out."""
    return [(stage, folder, state if selected(stage, first, last) else
             "left out (--from/--until)") for stage, folder, state in _plan(config)]


def _plan(config: RunConfig) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    blocked = None
    try:
        for step in steps(config, say=lambda _message: None):
            if blocked:
                rows.append((step.name, str(step.out), f"runs if {blocked} changes its output"))
                continue
            inputs = _existing(step.inputs)
            current, why = up_to_date(step.stage, step.config, inputs, step.out)
            left = None if current else step.stage.unfinished(step.config, inputs, step.out)
            if left:  # no record of its own yet: a run stopped part-way
                why = f"interrupted: {left}" if read_manifest(step.out) is None else f"{why}; {left}"
            rows.append((step.name, str(step.out), why))
            if not current:
                blocked = step.name
        report = ReportStage()
        if blocked:
            rows.append(("report", config.output_dir, f"runs if {blocked} changes its output"))
        else:
            _, why = up_to_date(report, config, report_inputs(config), Path(config.output_dir))
            rows.append(("report", config.output_dir, why))
    except (InputError, FileNotFoundError) as err:
        done = {r[0] for r in rows}  # the rest are built on what a stage yet to run writes
        waits = f"runs after {blocked}" if blocked else f"waits for an earlier stage ({err})"
        rows += [(name, "", waits) for name in configured_stages(config) if name not in done]
    return rows


def _existing(inputs: dict[str, Path | None]) -> dict[str, Path]:
    missing = [f"{k} ({v})" for k, v in inputs.items() if v is not None and not Path(v).exists()]
    if missing:
        raise InputError(f"missing input(s): {', '.join(missing)}")
    return {k: Path(v) for k, v in inputs.items() if v is not None}


def run_main(config: RunConfig, force: bool = False, say: Callable[[str], None] = print,
             first: str | None = None, last: str | None = None,
             overwrite: bool = False) -> dict:
    """Runs the stages (``first``..``last``, default all); returns the run record (also
    written to ``run.json``). A run that fails writes its record too, with ``failed``
    (the stage that failed, or None when the next one failed as it was prepared; the
    last stage done; the error): the record of an earlier run must not stand for it, nor
    while the run goes on (``UNFINISHED``), in case it is killed."""
    check_run_outputs(config, first, last, overwrite)
    out = io.claim(config.output_dir, overwrite=overwrite)
    record = {"config": dataclasses.asdict(config), "stages": {}, "outputs": {}}

    def unfinished(done: str | None) -> None:
        """Until it ends, the record says the run has not, and what it has done: one
        killed (SIGKILL, a lost machine) leaves this, not an earlier, finished run's."""
        io.write_json(out / RUN_RECORD, {**record, "failed": {"stage": None, "after": done,
                                                              "error": UNFINISHED}})

    unfinished(None)
    numbered = [s for s in configured_stages(config) if selected(s, first, last)]
    running, done = None, None  # the stage running (None: between stages), the last done
    try:
        for step in steps(config, say):
            if last is not None and STAGES.index(step.name) > STAGES.index(last):
                break  # later steps read what earlier ones write: stop before building them
            if not selected(step.name, first, last):
                continue
            running = step.name
            number = numbered.index(step.name) + 1
            say(f"\n[{number}/{len(numbered)} {step.name}] {step.label}")
            with interrupts(step.name):
                result = execute(step.stage, step.config, step.inputs, step.out, force=force,
                                 overwrite=overwrite, say=say)
            record["stages"][step.out.name] = {"stage": step.name,
                                               "seconds": round(result.seconds, 2),
                                               "skipped": result.skipped, "summary": result.summary}
            record["outputs"][step.out.name] = str(step.out)
            say(_describe(step, result))
            running, done = None, step.name
            unfinished(done)
            if step.name == last and step.name != "evaluate":  # one step per split: all of them
                break  # building the next step would check inputs this run does not need
        if selected("report", first, last):
            running = "report"
            say(f"\n[{len(numbered)}/{len(numbered)} report] {out / 'report.html'}")
            with interrupts("report"):
                result = execute(ReportStage(), config, report_inputs(config), out, force=force,
                                 overwrite=overwrite, say=say)
            record["outputs"]["report"] = str(out / "report.html")
            say(f"  report {'up to date' if result.skipped else 'written'}")
    except BaseException as err:
        error = "interrupted" if isinstance(err, Interrupted) else str(err) or type(err).__name__
        record["failed"] = {"stage": running, "after": done, "error": error}
        io.write_json(out / RUN_RECORD, record)
        raise
    io.write_json(out / RUN_RECORD, record)
    return record


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) while a stage ran: ``stage`` names it."""

    def __init__(self, stage: str):
        super().__init__(f"interrupted during {stage}; run again to resume")
        self.stage = stage


@contextlib.contextmanager
def interrupts(stage: str) -> Iterator[None]:
    """Runs a stage so that Ctrl-C ends it as ``Interrupted``, whatever a library made of
    it: Ray Train replaces the SIGINT handler while it trains (its handler aborts the
    run, and ``fit`` then raises SystemExit(1), or the handler calls sys.exit(0)) and
    leaves its handler installed afterwards. Python writes the number of every signal it
    handles to the wakeup fd, whichever handler runs: a SIGINT read from it turns the
    stage's exception into ``Interrupted``; the handler of before the stage is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; set_wakeup_fd works there only
        return
    handler = signal.getsignal(signal.SIGINT)
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    try:
        yield
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt) or _received(read, signal.SIGINT):
            raise Interrupted(stage) from err
        raise
    finally:
        signal.set_wakeup_fd(wakeup)
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
        os.close(read)
        os.close(write)


def _received(fd: int, signum: int) -> bool:
    """Whether the wakeup fd ``fd`` holds ``signum``."""
    try:
        return signum in os.read(fd, 4096)
    except BlockingIOError:
        return False


def _qc_counts(folder: Path) -> str:
    """"84 utterances, 81 kept, 3 set aside (dev 1, train 2)" of a qc output folder."""
    from collections import Counter

    import pyarrow.parquet as pq

    from erc.qc.decisions import DECISIONS

    table = pq.read_table(folder / DECISIONS, columns=["split", "keep"])
    aside = Counter(split for split, keep in zip(table.column("split").to_pylist(),
                                                 table.column("keep").to_pylist()) if not keep)
    n, removed = table.num_rows, sum(aside.values())
    where = f" ({', '.join(f'{split} {k:,}' for split, k in sorted(aside.items()))})" if aside else ""
    return f"{n:,} utterances, {n - removed:,} kept, {removed:,} set aside{where}"


def _describe(step: Step, result: StageResult) -> str:
    """The line a person reads after a stage."""
    s = result.summary
    state = "up to date" if result.skipped else f"done in {result.seconds:.1f} s"
    if result.skipped and step.name in ("ingest", "preprocess", "qc", "adapters"):
        return f"  {step.name} up to date: {step.out}"
    if step.name == "ingest":
        from erc import console
        from erc.summary import format_summary, summary_line

        console.detail(format_summary(s))  # the full table goes to the run's log
        return f"  {summary_line(s)}\n  ingest {state}"
    if step.name == "preprocess":
        return f"  preprocess {state}"  # the pass printed its summary as it ended
    if step.name == "qc":
        from erc.qc.report import reference_notes

        decisions = s.get("relabel_proposals")
        # Reference photos left out or matching no clip are said here too, not only by erc qc.
        notes = "".join(f"\n  {line}" for line in reference_notes(s.get("face") or {}))
        return (f"  {_qc_counts(step.out)}{notes}\n  qc {state}: {step.out / 'report.html'}"
                + (f"; {decisions} relabel proposal(s)" if decisions else ""))
    if step.name == "train":
        from erc.stages.train import kept_candidate, refit_said
        from erc.train.data import chosen_on

        best = s.get("best", {})
        return (f"  {state}: best epoch {best.get('epoch', -1) + 1} of {s.get('epochs')}: {chosen_on(s)} "
                f"weighted F1 {best.get('dev_weighted_f1', float('nan')):.3f}, accuracy "
                f"{best.get('dev_accuracy', float('nan')):.3f}"
                + (f"\n  {kept}" if (kept := kept_candidate(s)) else "")
                + (f"\n  {refit}" if (refit := refit_said(s)) else ""))
    if step.name == "evaluate":
        from erc.report import MIN_JUDGED

        small = ", too few to judge accuracy" if s.get("n", 0) < MIN_JUDGED else ""
        # n + the unlabelled + the rows set aside before scoring: the split's input rows
        unlabelled = f", {s['n_unlabelled']:,} unlabelled" if s.get("n_unlabelled") else ""
        aside = s.get("set_aside") or {}
        aside = (f", {sum(aside.values()):,} set aside (" + ", ".join(
            f"{reason} {n:,}" for reason, n in aside.items()) + ")") if aside else ""
        if not s.get("n"):  # predicted, nothing scored (its scores are null)
            return (f"  {s.get('split')}: no labelled utterance, nothing scored; "
                    f"{s.get('n_unlabelled', 0):,} predicted{aside} ({state})")
        return (f"  {s.get('split')}: accuracy {s.get('accuracy', 0):.3f}, weighted F1 "
                f"{s.get('weighted_f1', 0):.3f}, macro F1 {s.get('macro_f1', 0):.3f} "
                f"(n={s.get('n')}{small}{unlabelled}{aside}) ({state})")
    return f"  {step.name} {state}"
