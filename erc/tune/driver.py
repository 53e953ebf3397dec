"""The search driver: Ray Tune's ``Tuner`` with ``OptunaSearch`` (TPE) and an ASHA
scheduler over trials that run the real training (``erc.tune.trial``), maximising the
dev weighted F1 of each trial's best epoch.

- Held out: the search chooses on the dev split only (``roles["dev"]``: on a fold, the
  selection slice). Where ``roles`` has a ``report`` split (``search_roles``: ``test`` when
  the corpus has one), every trial also scores its best-dev model there; the outcome quotes
  the best trial's and the untuned default's figures on it, and the gain of the search there.
  A corpus with no test split (``selection_split``) is searched on a dialogue-level slice of
  its training split, its dev split becoming the report split.

- Data once: the features (e.g. frozen MiniLM embeddings, cached under the erc state dir)
  and the training data are built here, before any trial, and shared through the object
  store (``tune.with_parameters``).
- Resources: every trial gets ``resources_per_trial`` (``gpu: auto`` = one GPU when the
  cluster has GPUs); ``max_concurrent_trials`` trials run at once.
- Resume: the search lives in ``OUT/ray/search`` (or ``--storage``). Running the same
  command again restores it (``Tuner.restore``, with the OptunaSearch state saved there):
  finished trials are kept, never re-run; interrupted ones go on from their latest epoch
  checkpoint; errored ones are retried; new ones are sampled until ``num_samples`` trials
  exist. ASHA's rungs (every score it has recorded) are kept in ``OUT/asha_rungs.json``,
  so trials after a resume are judged against the same rungs. ``OUT/search.json`` records
  what the search is (space, data) so a different search cannot resume it by mistake.
- Adapter sizes (``adapter_hidden`` / ``adapter_out``): the raw identity vectors are
  shared instead, and each trial runs them through adapters of its own sizes.
- Outputs in ``OUT``: manifest.json (naming the tune stage), trials.csv, best_config.yaml,
  history.png, importance.png, report.html, and ``trial_starts.jsonl`` (one line per trial
  start, resumed ones too).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from erc import io
from erc.errors import ConfigError, OwnershipError
from erc.stages.base import MANIFEST, one_stage_per_folder
from erc.storage import is_uri, ray_storage, remove_tree
from erc.train.folds import SELECT_SPLIT  # the slice a search chooses on (--select-fraction)
from erc.tune import results as res
from erc.tune.space import METRIC, REPORT_ROLE, TIME_ATTR, SearchSpec

log = logging.getLogger(__name__)
EXPERIMENT = "search"
SEARCH_RECORD = "search.json"  # what the search is (_record): a different one cannot resume it
LEDGER = "trial_starts.jsonl"  # one line per trial start (erc.tune.trial)
ASHA_RUNGS = "asha_rungs.json"  # the scheduler's rungs, kept across a resume
# Checkpoints a trial keeps. With one, a search killed right after a trial saved its third
# epoch resumed from a saved state that named its first, already deleted: the trial failed.
TRIAL_CHECKPOINTS = 3
# What write_outputs writes, by its key in SearchOutcome.files
RESULTS = {"trials": "trials.csv", "best_config": "best_config.yaml", "history": "history.png",
           "importance": "importance.png", "report": "report.html"}
# What a search writes into its folder (_record, the ledger, the rungs, its manifest, results)
OUTPUTS = (SEARCH_RECORD, LEDGER, ASHA_RUNGS, MANIFEST, *RESULTS.values())


@dataclass
class SearchOutcome:
    out_dir: Path
    rows: list[dict]
    best: dict | None
    default: dict | None
    files: dict[str, Path] = field(default_factory=dict)
    resumed: bool = False
    table: str = ""
    summary: list[str] = field(default_factory=list)


def search_roles(table, train: str = "train", dev: str = "dev",
                 report: str | None = None) -> dict[str, str]:
    """Role -> split of a search: ``train``, ``dev`` (what every choice is made on) and,
    where there is one, ``report``: the held-out split nothing is chosen on (``report``, or
    by default ``test`` when the table has it)."""
    from erc.train.data import resolve_roles

    roles = resolve_roles(table, {"train": train, "dev": dev})
    if roles["dev"] == roles["train"]:  # every choice would be made on training dialogues
        raise ConfigError(f"dev split {roles['dev']!r} is the train split: the search must "
                          f"choose on dialogues it does not train on; name another --dev-split, "
                          f"or --select-fraction to choose on a slice of {roles['train']!r}")
    if report is None:
        present = set(table.column("split").to_pylist())
        report = "test" if ("test" in present and "test" not in roles.values()
                            and _labelled(table, "test")) else None
    if report is None:
        return roles
    _check_labelled(table, report)
    if report in roles.values():
        role = "dev" if report == roles["dev"] else "train"
        raise ConfigError(f"report split {report!r} is the {role} split: the held-out split "
                          f"must be one the search neither trains nor chooses on (train "
                          f"{roles['train']!r}, dev {roles['dev']!r})")
    return resolve_roles(table, {**roles, REPORT_ROLE: report})


def _labelled(table, split: str) -> bool:
    """Whether ``split`` has a labelled utterance: a held-out figure of none is no figure
    (a test split whose labels are withheld). A table without labels at all: not known."""
    if "emotion" not in table.column_names:
        return True
    return any(e for s, e in zip(table.column("split").to_pylist(),
                                 table.column("emotion").to_pylist()) if s == split)


def _check_labelled(table, report: str) -> None:
    if report in set(table.column("split").to_pylist()) and not _labelled(table, report):
        raise ConfigError(f"report split {report!r} has no labelled utterances: there is "
                          f"nothing to score there; name a labelled split, or leave "
                          f"--report-split out")


def selection_split(table, fraction: float, train: str = "train", dev: str = "dev",
                    report: str | None = None, seed: int = 0):
    """(table, roles) of a search that chooses on a seeded dialogue-level slice of the
    training split (``erc.train.folds.with_selection_slice``, the bench's protocol and
    ``erc train --select-fraction``'s): train = the rest of the training split, dev = the
    slice (split ``select``), report = the corpus's dev split (valid/val when it has no dev),
    or ``report``; a corpus without a dev split reports on its test split, or on none (the
    slice stands in for the dev split it lacks, as for ``erc train --select-fraction``).
    Other splits are left out."""
    import pyarrow as pa

    from erc.train.data import dev_split_of, resolve_roles
    from erc.train.folds import with_selection_slice

    present = set(table.column("split").to_pylist())
    if report is not None:
        _check_labelled(table, report)
    else:
        report = dev_split_of(present) if dev == "dev" else dev
        if dev == "dev" and report not in present:
            report = "test" if "test" in present and train != "test" else None
        if report in present and not _labelled(table, report):
            report = None
    roles = resolve_roles(table, {"train": train} | ({REPORT_ROLE: report} if report else {}))
    if report == roles["train"]:
        raise ConfigError(f"report split {report!r} is the train split: the held-out split "
                          f"must be one the search neither trains nor chooses on")
    try:
        table = with_selection_slice(table, roles["train"], fraction, seed)
    except ValueError as error:  # a fraction out of (0, 1), too few dialogues, a split 'select'
        raise ConfigError(f"--select-fraction {fraction} of split {roles['train']!r}: "
                          f"{error}") from None
    kept = {roles["train"], SELECT_SPLIT, report}
    table = table.filter(pa.array([s in kept for s in table.column("split").to_pylist()]))
    return table, {"train": roles["train"], "dev": SELECT_SPLIT} | (
        {REPORT_ROLE: report} if report else {})


def describe_roles(table, roles: Mapping[str, str], fraction: float | None = None) -> str:
    """One line saying what each split of a search is, with its dialogue count."""
    counts: dict[str, set] = {}
    for split, dialogue in zip(table.column("split").to_pylist(),
                               table.column("dialogue_id").to_pylist()):
        counts.setdefault(split, set()).add(dialogue)

    def n(split: str) -> str:
        return f"{len(counts.get(split, ()))} dialogues"

    train, dev = roles["train"], roles["dev"]
    if fraction is not None:
        line = (f"splits: train = {train!r} less a {fraction:.0%} dialogue slice ({n(train)}); "
                f"dev = that slice, {dev!r}, every choice is made on it ({n(dev)})")
    else:
        line = (f"splits: train = {train!r} ({n(train)}); dev = {dev!r}, every choice is made "
                f"on it ({n(dev)})")
    report = roles.get(REPORT_ROLE)
    if report is None:
        return line + "; no held-out split: every figure is on dev"
    return line + f"; held-out report = {report!r}, nothing is chosen on it ({n(report)})"


def build_data(spec: SearchSpec, table, feature_spec: Mapping | None = None,
               roles: Mapping[str, str] | None = None, features: Mapping | None = None
               ) -> tuple[Any, dict]:
    """(training data, base config) of a family, built once for every trial."""
    from erc.train.data import build_dialogue_data, build_text_data

    if spec.family == "fusion":
        from erc.train.vectors import load_features, raw_features, require_vectors

        if spec.adapter_sizes():
            # Each trial adapts the raw vectors with adapters of its own sizes.
            if features is not None or not feature_spec:
                raise ValueError("a search over adapter sizes needs the feature spec "
                                 "(raw features), not loaded features")
            from erc.tune.trial import AdaptableDialogues

            raw = raw_features(feature_spec, table)
            require_vectors(feature_spec, raw)
            data = AdaptableDialogues(table, raw, dict(feature_spec), roles)
            return data, {"labels": data.labels, "features": dict(feature_spec)}
        if features is None:
            if not feature_spec:
                raise ValueError("a fusion search needs features (feature_spec)")
            features = load_features(feature_spec, table)
            require_vectors(feature_spec, features)
        data = build_dialogue_data(table, features, roles)
        base = {"modalities": data.modalities, "dims": data.dims, "labels": data.labels,
                "features": dict(feature_spec or {})}
        return data, base
    from erc.models.text import check_frozen_layers, load_tokenizer
    from erc.train.vectors import resolve_text_encoder
    from erc.tune.trial import recipe_of

    text = recipe_of(spec, spec.defaults())
    encoder = resolve_text_encoder(text.encoder)
    check_frozen_layers(text.model, encoder)
    data = build_text_data(table, load_tokenizer(encoder), text.model, roles)
    return data, {"encoder": str(Path(encoder).resolve()), "labels": data.labels}


def _record(out_dir: Path, spec: SearchSpec, data_key: str, fresh: bool,
            experiment_path: str) -> bool:
    """Writes / checks ``search.json``; True when an earlier search of the same kind exists."""
    record = out_dir / SEARCH_RECORD
    now = {"fingerprint": spec.fingerprint(), "data": data_key, "spec": spec.to_dict(),
           "source": spec.source, "experiment": experiment_path}
    if record.is_file() and not fresh:
        before = json.loads(record.read_text())
        for key, what in (("fingerprint", "search space / fixed values / search settings"),
                          ("data", "data (corpus, subset, features, splits)")):
            if before.get(key) != now[key]:
                raise ConfigError(
                    f"{out_dir} holds a search with other {what} than this one: resume it "
                    f"with the same search file and data, or pass --fresh to start over "
                    f"(or use another --out)")
        kept = {k: v for k, v in before["spec"]["search"].items()
                if k in ("num_samples", "max_concurrent_trials", "resources_per_trial",
                         "max_failures") and v != now["spec"]["search"].get(k)}
        if kept:
            print("[tune] a resumed search keeps the settings it started with: " + ", ".join(
                f"{k} {v} (not {now['spec']['search'].get(k)})" for k, v in kept.items()),
                flush=True)
        return True
    out_dir.mkdir(parents=True, exist_ok=True)
    now["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
    io.write_json(record, now)
    return False


def _mark_tune_folder(out_dir: Path, spec: SearchSpec, data_key: str) -> None:
    """Writes the folder's ``manifest.json`` naming the tune stage, as every stage's output
    folder has: another stage given this folder refuses it (``one_stage_per_folder``)
    instead of writing its results among the search's."""
    from erc import __version__
    from erc.fingerprint import digest

    io.write_json(out_dir / MANIFEST, {
        "erc": __version__, "stage": "tune",
        "fingerprint": digest({"search": spec.fingerprint(), "data": data_key}),
        "search": SEARCH_RECORD, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _recorded(out_dir: Path, experiment_path: str) -> bool:
    """Whether ``out_dir``'s record says erc started the search at ``experiment_path``."""
    record = out_dir / SEARCH_RECORD
    return record.is_file() and json.loads(record.read_text()).get("experiment") == experiment_path


def _check_experiment_folder(out_dir: Path, experiment_path: str, filesystem=None) -> None:
    """OwnershipError when the search's folder in a ``--storage`` outside ``out_dir`` exists
    and ``out_dir`` has no record of starting a search there: someone else's files (or
    search), among which Tune would write and which --fresh would delete with the search.
    (One inside ``out_dir`` moves with it, and ``check_outputs`` stands for it.)"""
    import pyarrow.fs as pafs

    if filesystem is None:
        # --storage the folder holding OUT (an OUT named "search"): the search's folder is
        # OUT itself, which --fresh removed whole, with all it held
        if out_dir.resolve().is_relative_to(experiment_path):
            raise OwnershipError(f"{experiment_path}: Tune's folder for the search would be the "
                                 f"output folder {out_dir} itself (or hold it); choose another "
                                 f"--storage")
        if Path(experiment_path).is_relative_to(out_dir.resolve()):
            return
        exists = os.path.lexists(experiment_path)
    else:
        exists = filesystem.get_file_info(experiment_path).type != pafs.FileType.NotFound
    if exists and not _recorded(out_dir, experiment_path):
        raise OwnershipError(f"{experiment_path}: exists, and {out_dir} has no record of a search "
                             f"there; erc leaves it in place (remove it yourself, or use another "
                             f"--storage or --out)")


def _discard(out_dir: Path, experiment_path: str, filesystem=None) -> None:
    """--fresh: removes the earlier search of ``out_dir`` (its record says erc started it
    there); a search folder erc has no record of is left in place, with an error."""
    from ray.tune import Tuner

    ours = _recorded(out_dir, experiment_path)
    if Tuner.can_restore(experiment_path, storage_filesystem=filesystem) and not ours:
        raise OwnershipError(f"{experiment_path}: holds a search this folder has no record of; "
                             f"erc leaves it in place (remove it yourself, or use another --out)")
    if ours:
        remove_tree(experiment_path, filesystem)
    _forget_trials(out_dir)


def _forget_trials(out_dir: Path) -> None:
    """Removes the record, trial starts and ASHA rungs of an earlier search in ``out_dir``."""
    for name in (SEARCH_RECORD, LEDGER, ASHA_RUNGS):
        if (out_dir / name).exists():
            io.remove_owned(out_dir, name)


def _storage_in(out_dir: Path, storage: str | None) -> tuple[str, ...]:
    """Where in ``out_dir`` the search is kept (a pattern of what it writes there): ``ray``
    by default, the search's folder of a ``--storage`` inside ``out_dir`` (in a folder erc
    adopted, a folder of the user's there is not written into); none for one outside."""
    if storage is None:
        return ("ray",)
    if is_uri(storage) or not Path(os.path.abspath(storage)).is_relative_to(out_dir):
        return ()
    return ((Path(os.path.abspath(storage)).relative_to(out_dir) / EXPERIMENT).as_posix(),)


def _check_storage_holds_no_keys(storage: str | None) -> None:
    """Ray Tune pickles the filesystem of its storage, the keys it was opened with included,
    into the search's files (tuner.pkl; each trial's state in experiment_state-*.json): a
    storage URI with a credential in it is refused before anything is written."""
    from erc.redaction import redact

    if storage and is_uri(storage) and redact(storage) != storage:
        raise ConfigError(
            f"{redact(storage)}: Ray Tune writes the filesystem of its storage, keys included, "
            f"into the search's files (tuner.pkl, its experiment state), so the storage URI "
            f"must hold no credential; give it without one and the store's keys where pyarrow "
            f"looks for them (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, "
            f"~/.aws/credentials, an instance profile), or --storage a local folder")


def run_search(spec: SearchSpec, table, out_dir: str | Path, *,
               feature_spec: Mapping | None = None, features: Mapping | None = None,
               roles: Mapping[str, str] | None = None, data_key: str = "",
               address: str | None = None, num_cpus: int | None = None,
               storage: str | None = None, fresh: bool = False, verbose: int = 1,
               command: str | None = None, note: str = "", overwrite: bool = False) -> SearchOutcome:
    """Runs (or resumes) the search ``spec`` on ``table`` and writes its outputs to
    ``out_dir``. ``command``: the ``erc train`` command line the best config is for.
    ``overwrite``: write into a folder holding files erc did not write (they stay there)."""
    _check_storage_holds_no_keys(storage)
    # absolute, not resolved: a link in place of the folder is refused (io.claim), not followed
    out_dir = Path(os.path.abspath(out_dir))
    # Checked before the folder is claimed, so that a refused search leaves it as it was:
    # someone else's folder without overwrite, another stage's, a file of the user's where
    # the search writes (kept in a folder erc adopts), which stops it before its trials.
    io.check_claim(out_dir, overwrite)
    one_stage_per_folder(out_dir, "tune")
    io.check_outputs(out_dir, (*OUTPUTS, *_storage_in(out_dir, storage)))
    with io.claimed(out_dir, overwrite=overwrite, stage="tune"):  # one search per folder at a time
        return _search(spec, table, out_dir, feature_spec=feature_spec, features=features,
                       roles=roles, data_key=data_key, address=address, num_cpus=num_cpus,
                       storage=storage, fresh=fresh, verbose=verbose, command=command, note=note)


def _search(spec: SearchSpec, table, out_dir: Path, *, feature_spec, features, roles, data_key,
            address, num_cpus, storage, fresh, verbose, command, note) -> SearchOutcome:
    from erc import runtime
    from erc.train.data import training_roles

    storage_path, filesystem = ray_storage(storage or str(io.not_linked(out_dir / "ray")))
    experiment_path = f"{storage_path}/{EXPERIMENT}"
    ledger = out_dir / LEDGER
    _check_experiment_folder(out_dir, experiment_path, filesystem)
    if fresh:
        _discard(out_dir, experiment_path, filesystem)
    runtime.apply_offline_env()  # before Ray is imported
    from ray.tune import Tuner

    spec = _without_idle_adapter_sizes(spec, feature_spec)
    roles = dict(roles) if roles is not None else search_roles(table)
    # Trials learn from the train split's labels and are chosen by the dev split's.
    training_roles(table, {"train": roles["train"], "dev": roles["dev"]})
    resumed = Tuner.can_restore(experiment_path, storage_filesystem=filesystem)
    if resumed and not (out_dir / SEARCH_RECORD).is_file():
        raise ConfigError(f"{experiment_path} holds a search this folder has no record of "
                          f"({SEARCH_RECORD}): pass --fresh to start over")
    # Nothing to resume where this folder's search was started (one refused before Tune
    # started it: no node fits a trial, missing vectors): a new search, not one the
    # corrected command must match, and with no rungs or trial starts of an earlier one.
    # A record of a search at another experiment path (another --storage) is kept.
    restart = not resumed and not fresh and _recorded(out_dir, experiment_path)
    if restart:
        _forget_trials(out_dir)
    _record(out_dir, spec, data_key, fresh or restart, experiment_path)
    _mark_tune_folder(out_dir, spec, data_key)

    runtime.connect(address, num_cpus=num_cpus)
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig

    started = time.time()
    data, base = build_data(spec, table, feature_spec, roles, features)
    print(f"[tune] training data built once for every trial in {time.time() - started:.1f} s "
          f"({spec.family}: {len(data.labels)} labels)", flush=True)
    resources = trial_resources(spec.search.resources_per_trial)
    setup = {"spec": spec, "base": base, "cpu": resources["cpu"], "gpu": resources["gpu"],
             "ledger": str(ledger),
             "report_split": REPORT_ROLE if REPORT_ROLE in roles else None}
    from erc.tune.trial import train_trial

    trainable = tune.with_resources(tune.with_parameters(train_trial, data=data, setup=setup),
                                    resources)
    # How often the search state (trial statuses, the searcher) is saved: what a resume
    # after a kill starts from.
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(spec.search.experiment_checkpoint_s)
    # Tune also saves it whenever a trial has checkpointed (every epoch): wanted here (a
    # resume loses nothing), so not worth its warning. The saved state can still lag a
    # trial's newest checkpoint by an epoch or two when epochs are short: a trial keeps
    # its last TRIAL_CHECKPOINTS so that the one a resume asks for is still there.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if resumed:
        print(f"[tune] resuming the search in {experiment_path}", flush=True)
        tuner = Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                              resume_errored=True, storage_filesystem=filesystem)
    else:
        tuner = Tuner(trainable, param_space={},
                      tune_config=_tune_config(spec, out_dir / ASHA_RUNGS),
                      run_config=RunConfig(
                          name=EXPERIMENT, storage_path=storage_path,
                          storage_filesystem=filesystem, verbose=verbose,
                          checkpoint_config=CheckpointConfig(num_to_keep=TRIAL_CHECKPOINTS),
                          failure_config=FailureConfig(max_failures=spec.search.max_failures)))
    print(f"[tune] {spec.search.num_samples} trials of {spec.family} "
          f"({len(spec.params)} parameters), {spec.search.max_concurrent_trials} at a time, "
          f"each with {resources}", flush=True)
    grid = _fit(tuner)
    return write_outputs(grid, spec, out_dir, resumed=resumed, command=command, note=note,
                         roles=roles)


def _fit(tuner):
    """``tuner.fit()``, raising KeyboardInterrupt when Tune caught a Ctrl-C: Tune then saves
    the search and returns, its running trials stopped, which would read as ASHA stops and
    the best config as the search's choice. Interrupted, it writes no outputs (exit 130)
    and the same command resumes it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # Tune installs none there
        return tuner.fit()

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, interrupt)
    try:
        grid = tuner.fit()
        # Tune's handler, on a Ctrl-C, puts back the one it replaced: this one
        caught = (signal.getsignal(signal.SIGINT) is interrupt
                  and not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0")))
    finally:
        signal.signal(signal.SIGINT, before)
    if caught:
        print("[tune] interrupted: run the same command again to resume the search", flush=True)
        raise KeyboardInterrupt
    return grid


def trial_resources(wanted: Mapping[str, Any]) -> dict:
    """``resources_per_trial`` as Tune takes them: ``gpu: auto`` is one GPU where the
    cluster has or can launch GPU nodes (erc.cluster.gpu_plan); ``accelerator_type`` pins
    trials to nodes with that GPU. Checked against what the cluster can launch."""
    from erc import cluster

    resources = {"cpu": wanted["cpu"], "gpu": wanted.get("gpu", "auto")}
    if resources["gpu"] == "auto":
        resources["gpu"] = 1 if cluster.gpu_plan("search.resources_per_trial.gpu").per_node else 0
    request = cluster.Request(num_gpus=float(resources["gpu"]),
                              accelerator_type=wanted.get("accelerator_type"))
    # the CPUs too: a trial no node can hold waited forever (Tune only warns)
    cluster.check_feasible(replace(request, resources={"CPU": float(resources["cpu"])}),
                           "a trial")
    resources.update({k: v for k, v in request.shape().items() if k != "GPU"})
    return resources


def _without_idle_adapter_sizes(spec: SearchSpec, feature_spec: Mapping | None) -> SearchSpec:
    """Adapter sizes searched where no modality has an adapter (a text-only search) would
    change nothing: they are left out, with a message. Fixed to a size there: an error."""
    names = spec.adapter_sizes()
    if not names or any(item.get("adapter") for item in (feature_spec or {}).values()):
        return spec
    fixed = [n for n in names if n not in spec.params]
    if fixed:
        raise ConfigError(f"{spec.source}: fixed.{fixed[0]} resizes the identity adapters, but "
                          f"no modality has one (--speaker-adapter / --face-adapter)")
    if set(spec.params) <= set(names):
        raise ConfigError(f"{spec.source}: params: only adapter sizes are searched, and no "
                          f"modality has an adapter (--speaker-adapter / --face-adapter): "
                          f"nothing to search")
    print(f"[tune] {', '.join(names)}: no modality has an adapter here, so they are left out "
          f"of the search", flush=True)
    return spec.without(names)


def _tune_config(spec: SearchSpec, rungs_path: Path | None = None):
    from ray.tune import TuneConfig

    s = spec.search
    search_alg = None
    if spec.params:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        startup = min(10, max(4, s.num_samples // 3))
        search_alg = OptunaSearch(
            space={name: p.optuna() for name, p in spec.params.items()}, metric=METRIC,
            mode="max", sampler=optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup),
            points_to_evaluate=[spec.default_point()] if s.include_default else None)
    scheduler = None
    if s.scheduler.type == "asha":
        from erc.tune.scheduler import DefaultKeepingASHA

        scheduler = DefaultKeepingASHA(
            protected=spec.default_point() if s.include_default and spec.params else None,
            state_path=str(rungs_path) if rungs_path else None,
            time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=spec.max_epochs(),
            grace_period=s.scheduler.grace_period, reduction_factor=s.scheduler.reduction_factor)
    return TuneConfig(search_alg=search_alg, scheduler=scheduler,
                      num_samples=s.num_samples if spec.params else 1,
                      max_concurrent_trials=s.max_concurrent_trials)


def write_outputs(grid, spec: SearchSpec, out_dir: Path, resumed: bool = False,
                  command: str | None = None, note: str = "",
                  roles: Mapping[str, str] | None = None) -> SearchOutcome:
    rows = res.collect(grid, spec)
    path = {key: out_dir / name for key, name in RESULTS.items()}
    files = {"trials": res.write_csv(rows, path["trials"])}
    best, default = res.best_row(rows), res.default_row(rows)
    if res.write_best_config(rows, spec, path["best_config"], command=command,
                             note=note, roles=roles) is not None:
        files["best_config"] = path["best_config"]
    files["history"] = res.plot_history(rows, path["history"])
    values, method = res.importances(rows, spec)
    files["importance"] = res.plot_importance(values, method, path["importance"])
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary = [f"{len(rows)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    summary += res.outcome_lines(best, default, roles or {})
    if values:
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(values.items())[:4])
        summary.append(f"importance ({method}): {top}")
    else:
        summary.append(f"importance: {method}")
    if command and best is not None:
        summary.append(f"train the best: {command}")
    files["report"] = res.write_report(rows, spec, path["report"], files, summary)
    return SearchOutcome(out_dir=out_dir, rows=rows, best=best, default=default, files=files,
                         resumed=resumed, table=res.format_table(rows, spec, roles), summary=summary)
