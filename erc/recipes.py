"""Every setting erc has, with its default, in one place.

Each stage and model has one dataclass here; the YAML run config, the command line of
every ``erc`` command, ``-o key=value`` overrides and the tune search spaces are all derived
from these fields by ``erc.settings`` (a field's trailing comment is its help text; bounds
are declared in its type). The quality-control settings live with the checks they tune
(``erc.qc.decisions.QCConfig`` and the configs it nests) and are composed here.

    RunConfig                    the main job (``erc run --config FILE``)
      corpus:     CorpusConfig       what to read (``erc corpus ingest``)
      ray:        RayConfig          where to run
      preprocess: PreprocessConfig   the Ray Data pass (``erc preprocess``)
      qc:         QCSection          quality control (``erc qc``)
      train:      TrainSection       adapters, the fusion model, evaluation
    FusionRecipe   ``erc train fusion``: FusionConfig + TrainConfig + data settings
    TextRecipe     ``erc train text``:   TextModelConfig + TrainConfig + data settings
    AdapterRecipe  ``erc train adapter``: AdapterConfig sizes + AdapterTraining

Nothing here imports a model library: the command line builds its options from these
classes without loading torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from erc.qc.decisions import QCConfig
from erc.settings import PATH

Positive = Annotated[float, Field(gt=0)]
Share = Annotated[float, Field(ge=0, lt=1)]
Count = Annotated[int, Field(ge=1)]
# A layer's size: a bound far above any model erc trains (the paper's token is 1,024 wide),
# so that a slip (d_model 10**12) is an error naming the option, not an allocation that
# fails in a worker mid-job.
MAX_WIDTH = 16384
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Cpus = Annotated[float, Field(gt=0)]
# Passes over the data: a bound far above any schedule erc trains (the adapters' 300), so that
# a slip (10**12) is an error naming the option, not a run whose warm-up spans a share of
# all its steps and so leaves the learning rate near 0 for as long as anyone waits.
MAX_EPOCHS = 10_000
Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]

MAX_CLIP_SECONDS = 60.0  # an utterance longer than this is a mis-cut clip (ingest and decode)
# No speaker model of erc embeds less than 0.1 s (SpeechBrain's min_seconds; Resemblyzer
# needs 0.3 s of voice), and a spoken word takes longer: below it a clip is a mis-cut.
MIN_CLIP_SECONDS = 0.1  # an utterance shorter than this is too short to embed (ingest and decode)
# Frozen text tokens read the encoder's last 4 layers, each mean-pooled and unit-normalised,
# concatenated: better than the sentence vector on the selection split of both corpora
# (bench/RESULTS.md). Used by `erc train fusion --text st:...` and the main job's pass.
TEXT_LAYERS = 4
FLAT = {"flatten": True}


def _flat(factory) -> Any:
    return field(default_factory=factory, metadata=FLAT)


# -- where to run ---------------------------------------------------------------------------

@dataclass
class RayConfig:
    address: str | None = None  # None: embedded single-node Ray on 127.0.0.1; else a cluster address
    num_cpus: Count | None = None  # CPUs of the embedded Ray (None: all of this machine's)
    num_gpus: Annotated[int, Field(ge=0)] | None = None  # GPUs of the embedded Ray (None: all visible)
    dashboard: bool = False  # start Ray's dashboard (embedded Ray only)


# -- ingest ---------------------------------------------------------------------------------

@dataclass
class CorpusConfig:
    path: str = field(default="", metadata=PATH)  # corpus folder or manifest file (relative: to the config file's folder)
    format: str | None = None  # corpus format (None: detected from the path)
    options: dict[str, Any] = field(default_factory=dict)  # reader options of the format
    check_media: bool = False  # open every media file on Ray and decode its audio; unreadable, truncated or overlong ones are set aside
    max_clip_seconds: Positive = MAX_CLIP_SECONDS  # with check_media: longer clips are mis-cut
    min_clip_seconds: Annotated[float, Field(ge=0)] = MIN_CLIP_SECONDS  # with check_media: shorter utterances are too_short (0: no minimum)


# -- preprocess -----------------------------------------------------------------------------

@dataclass
class DecodeSettings:
    """How each utterance's media is decoded (``erc.media.decode``)."""
    frame_rate: Positive = 1.0  # video frames sampled per second of utterance
    max_frames: Count = 16  # at most this many frames per utterance
    max_side: Count | None = 480  # downscale frames whose longer side exceeds this (None: never)
    max_clip_seconds: Positive | None = MAX_CLIP_SECONDS  # longer utterances fail as overlong_clip
    min_clip_seconds: Annotated[float, Field(ge=0)] = MIN_CLIP_SECONDS  # decoded audio shorter than this fails as too_short (0: no minimum)
    silence_rms: Annotated[float, Field(ge=0)] = 1e-3  # loudest 0.25 s of audio below this RMS (about -60 dBFS) is silence
    # Real speech stays far below the bar: at most 0.064 % of samples at full scale over the
    # 1,100 clips of shared/assets (RAVDESS at most 0.011 %). Not higher: resampling to 16 kHz
    # rounds a square wave's edges (one of 2 kHz at 48 kHz keeps half its samples at full scale).
    max_clipped_share: Annotated[float, Field(gt=0, le=1)] = 0.2  # audio with this share of its samples at full scale (|x| >= 0.99) or more is clipping, not speech
    # decoded audio shorter than this share of the declared length (minus 0.25 s) is a truncated file
    truncation_tolerance: Annotated[float, Field(gt=0, le=1)] = 0.8
    expect_video: bool | None = field(default=None, metadata={"internal": True})  # None: iff a video stream


@dataclass
class StageResources:
    """Resources of one stage of the preprocessing pass; None takes the stage's own
    default (``erc.pipeline.stages``)."""
    batch_size: Count | None = None  # rows per call of the stage
    concurrency: Count | list[Count] | None = None  # actors (or [min, max]); decode: tasks at once
    num_cpus: Cpus | None = None  # per actor / task (None: fitted to the cluster's CPUs)
    num_gpus: Annotated[float, Field(ge=0)] | None = None  # per actor, e.g. 0.25 (None: auto, shared out over the largest GPU node the cluster has or can launch; 0: CPU)
    accelerator_type: str | None = None  # only on nodes with this GPU, e.g. L4
    resources: dict[str, Annotated[float, Field(gt=0)]] = field(default_factory=dict)  # custom Ray resources per actor / task


@dataclass
class PreprocessConfig:
    """The preprocessing pass (``erc preprocess``): decode, ASR, faces, speaker, text."""
    profile: str = "offline"  # model profile of erc.backends.registry (offline, paper)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> model spec fields
    output_dir: str | None = field(default=None, metadata=PATH)  # main job: where the features go (None: OUTPUT/features)
    partition_rows: Count = 256  # rows per output part (the unit of resumption)
    decoding: DecodeSettings = _flat(DecodeSettings)
    decode: StageResources = field(default_factory=StageResources, metadata={"prefix": "decode"})
    faces: StageResources = field(default_factory=StageResources, metadata={"prefix": "faces"})
    asr: StageResources = field(default_factory=StageResources, metadata={"prefix": "asr"})
    speaker: StageResources = field(default_factory=StageResources, metadata={"prefix": "speaker"})
    text: StageResources = field(default_factory=StageResources, metadata={"prefix": "text"})
    text_layers: Count = TEXT_LAYERS  # the text stage also writes text_layers: the text model's last N layers, each mean-pooled and unit-normalised, concatenated (what the main job's fusion model reads; 1: text_embedding only)

    def __post_init__(self):
        # Ray Data refused these as the pass was built, after Ray started: a traceback
        from erc.errors import ConfigError

        for name in ("decode", "faces", "asr", "speaker", "text"):
            size = getattr(self, name).concurrency
            if isinstance(size, list) and (name == "decode" or len(size) != 2 or size[0] > size[1]):
                said = ("a number of tasks at once" if name == "decode" else
                        "a number of actors or [min, max] with min <= max")
                raise ConfigError(f"{name}.concurrency {size}: expected {said}")


# -- models and training --------------------------------------------------------------------

@dataclass
class TrainConfig:
    """The training loop (``erc.train.loop``) every model shares."""
    name: str = field(default="erc", metadata={"internal": True})  # run name; same name + storage = resume
    storage_path: str | None = field(default=None, metadata={"cli": "storage", "tunable": False, **PATH})  # where Ray Train keeps checkpoints (default OUT/ray; the fusion model's two candidates: OUT/candidates/NAME/ray; on a cluster a shared folder or s3://...)
    epochs: Epochs = 30  # passes over the training split
    batch_size: Count = 16  # global units (dialogues / utterances) per optimiser step, split across workers
    lr: Annotated[float, Field(gt=0, le=1)] = 1e-3  # learning rate (AdamW)
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.01  # AdamW weight decay
    warmup_ratio: Share = 0.06  # linear warm-up share of all steps, then linear decay to 0
    grad_clip: Annotated[float, Field(ge=0)] = 1.0  # gradient norm clip (0: none)
    patience: Count = 4  # epochs without a better dev metric before stopping
    average_epochs: Annotated[float, Field(ge=0)] = 0.0  # > 0: the model scored and saved is a moving average of the weights over about this many epochs (0: the weights as trained)
    metric: Literal["accuracy", "weighted_f1", "macro_f1"] = field(default="weighted_f1", metadata={"tunable": False})  # dev metric for early stopping
    seed: Annotated[int, Field(ge=0)] = 0  # seed of initialisation and batch order
    num_workers: Count = field(default=1, metadata={"cli": "workers", "tunable": False})  # Ray Train workers (DDP)
    cpus_per_worker: Count | None = field(default=None, metadata={"tunable": False})  # CPUs (torch threads) per worker (None: on the embedded Ray, its CPUs shared by the workers; on a cluster, 1)
    use_gpu: bool | None = field(default=None, metadata={"cli": "gpu", "tunable": False})  # one GPU per worker (None: on the embedded Ray, when it has one per worker)
    accelerator_type: str | None = field(default=None, metadata={"tunable": False})  # one GPU of this type per worker, e.g. L40S (implies gpu)
    max_failures: Annotated[int, Field(ge=0)] = field(default=0, metadata={"tunable": False})  # worker failures retried from the latest checkpoint

    def gpus_per_worker(self) -> float:
        """1 when a worker trains on a GPU: use_gpu, or an accelerator type asked for."""
        return 1.0 if self.use_gpu or self.accelerator_type else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FusionConfig:
    """The fusion model (``erc.models.fusion``) over per-utterance tokens."""
    modalities: list[str] = field(default_factory=lambda: ["text", "speaker", "face"],
                                  metadata={"internal": True})
    dims: dict[str, int] = field(default_factory=lambda: {"text": 768, "speaker": 128, "face": 128},
                                 metadata={"internal": True})
    labels: list[str] = field(default_factory=list, metadata={"internal": True})
    n_classes: int = field(default=7, metadata={"internal": True})
    mixer: Literal["mamba", "transformer", "gru", "none"] = "gru"  # what mixes the turns of a dialogue (gru: best on the selection split of both corpora, bench/accuracy; mamba: the paper's)
    bidirectional: bool = True  # True: every turn sees the whole dialogue (batch); False: causal (streaming)
    speaker_roles: Annotated[int, Field(ge=0, le=MAX_WIDTH)] = 0  # > 0: learned speaker-role embeddings (order of appearance)
    speaker_pool: bool = field(default=False, metadata={"before": False})  # the classifier also reads the mean output of the turn's speaker and of the others in the dialogue (causal: up to the turn)
    speaker_state: bool = field(default=False, metadata={"before": False})  # a second recurrent pass over each speaker's own turns (party state: bidirectional or causal as the mixer), added to the mixer's output
    d_model: Annotated[int, Field(ge=8, le=MAX_WIDTH)] | None = 128  # tokens are projected to this width (None: the token width, the paper's)
    d_state: Width = 16  # Mamba state size (the paper: 64)
    d_conv: Width = 4  # Mamba convolution width
    expand: Width = 2  # Mamba expansion (transformer: feed-forward width factor)
    n_heads: Width = 8  # transformer heads (reduced to a divisor of d_model)
    window: Count | None = 1  # 1: the classifier reads the turn's own mixer output; N: the mean of the last N; None: all turns up to it
    isolate_turns: bool = field(default=False, metadata={"cli": "no_context"})  # every turn alone (the no-context baseline)
    dropout: Share = 0.2  # dropout on tokens and before the classifier
    neighbours: Annotated[int, Field(ge=0, le=MAX_WIDTH)] = field(default=10, metadata={"before": 0, "help": (
        "> 0: each turn also reads the labels of the N training utterances whose text "
        "vectors are nearest its own, from other dialogues than its own, weighted by "
        "similarity (a memory of the training labels saved with the model; 0: none; a "
        "model without text has none)")})
    dialogue_neighbours: Annotated[int, Field(ge=0, le=MAX_WIDTH)] = field(default=3, metadata={"before": 0, "help": (
        "> 0: each turn also reads the label shares of the N training dialogues whose mean "
        "text vector is nearest its dialogue's (causal models: its turns so far), weighted by "
        "similarity (the same memory as neighbours; 0: none)")})
    memory: int = field(default=0, metadata={"internal": True, "before": 0})  # training utterances the neighbours are drawn from (set from the data)
    turn_dropout: Share = field(default=0.0, metadata={"before": 0.0, "help": (
        "in training, this share of turns reads the missing embeddings: the turn is known "
        "from its context only (against text vectors fine-tuned on the training dialogues)")})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TextModelConfig:
    """The context text encoder (``erc.models.text``)."""
    encoder: str = field(default="", metadata={"internal": True})  # model folder (resolved)
    n_classes: int = field(default=7, metadata={"internal": True})
    labels: list[str] = field(default_factory=list, metadata={"internal": True})
    context_turns: Annotated[int, Field(ge=0)] = field(default=8, metadata={"fixed_only": True})  # past turns given as context (0: the utterance alone)
    future_turns: Annotated[int, Field(ge=0)] = field(default=0, metadata={"fixed_only": True})  # future turns given as context (0: causal, past turns only)
    max_length: Annotated[int, Field(ge=8)] = field(default=96, metadata={"fixed_only": True})  # tokens per input (context + target)
    speaker_names: bool = field(default=True, metadata={"fixed_only": True})  # prefix each turn with "speaker: "
    inputs: Literal["target", "window"] = field(default="target", metadata={"fixed_only": True, "before": "target", "help": (
        "target: one input per turn, with its context around it; window: training packs runs "
        "of consecutive turns into one input and trains every turn of it (about N times "
        "cheaper for N turns per input; needs future_turns)")})
    dropout: Share = 0.1  # dropout before the classification head
    freeze_layers: Annotated[int, Field(ge=0)] = 0  # freeze the embeddings and the first N encoder layers
    pooling: Literal["target_mean", "target_max", "cls"] = "target_mean"  # utterance vector: mean / max over the target's tokens, or [CLS]

    def __post_init__(self):
        # checked where the model was built, on a Ray worker, after the encoder loaded
        if self.inputs == "window" and (self.future_turns == 0 or self.pooling == "cls"):
            from erc.errors import ConfigError

            raise ConfigError("inputs window trains each turn with the turns after it and pools "
                              "its own tokens: it needs future_turns > 0 and pooling target_mean "
                              "or target_max (inputs target reads causal inputs)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdapterConfig:
    """An identity -> emotion adapter MLP (``erc.models.adapters``)."""
    modality: str = field(default="speaker", metadata={"internal": True})
    in_dim: int = field(default=256, metadata={"internal": True})
    hidden: Width = 256  # hidden size (in -> hidden -> out)
    out_dim: Width = 128  # output size: the adapted vector the fusion model reads
    n_classes: int = field(default=8, metadata={"internal": True})
    labels: list[str] = field(default_factory=list, metadata={"internal": True})
    dropout: Share = 0.2  # dropout after each layer
    normalize_input: bool = True  # L2-normalise identity vectors first

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdapterTraining:
    """How an adapter is trained (full-batch epochs with early stopping on held-out people)."""
    epochs: Epochs = 300  # at most this many epochs
    batch_size: Count = 64  # vectors per step
    lr: Annotated[float, Field(gt=0, le=1)] = 1e-3  # learning rate (AdamW)
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 1e-3  # AdamW weight decay
    patience: Count = 40  # epochs without better held-out accuracy
    val_groups: Share = 0.15  # share of people (groups) held out for early stopping
    seed: Annotated[int, Field(ge=0)] = 0  # seed of the held-out draw and initialisation


@dataclass
class Splits:
    train_split: str = field(default="train", metadata={"tunable": False})  # split the model trains on
    dev_split: str = field(default="dev", metadata={"tunable": False})  # split for early stopping (valid/val when the corpus has no dev)
    select_fraction: Annotated[float, Field(gt=0, lt=1)] | None = field(default=None, metadata={"tunable": False})  # stop early on this fraction of the train split's dialogues (a seeded slice, split 'select') instead of the dev split: a corpus without one, or dev kept unseen (bench/accuracy's protocol)


@dataclass
class FusionRecipe:
    """``erc train fusion``: the fusion model, its training loop and its data settings."""
    model: FusionConfig = _flat(FusionConfig)
    # Weight averaging over about an epoch: on MELD it lifts the selection score by 0.01 and
    # steadies the model across seeds (bench/RESULTS.md).
    loop: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, batch_size=8, lr=1e-3,
                                                                  average_epochs=1.0),
                              metadata=FLAT)
    splits: Splits = _flat(Splits)
    class_weight_power: Annotated[float, Field(ge=0, le=2)] = 0.5  # class weights (N / (C n_c)) ** power; 0 = unweighted
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = field(default=0.0, metadata={"help": (
        "share of each target's probability spread evenly over the classes in the loss "
        "(0: none; bench/RESULTS.md)")})
    choose_speaker_pool: bool = field(default=True, metadata={"tunable": False, "help": (
        "train the model with and without speaker_pool and keep the one with the better "
        "early-stopping score (dev, or the selection slice): IEMOCAP's selection split "
        "prefers pooling, MELD's not; --no-choose-speaker-pool trains the model as given")})
    refit: bool = field(default=False, metadata={"tunable": False, "help": (
        "when the candidate and epoch are chosen on a selection slice (--select-fraction), "
        "train the kept model again on the train split and the slice together for the chosen "
        "number of epochs (OUT/refit) and export that; a dev split is never trained on. Held "
        "out: IEMOCAP +0.01 weighted F1, MELD dev -0.006 (bench/RESULTS.md), so not the default")})
    adapter_hidden: Width | None = None  # adapters' hidden size (None: as they were trained; else retrained)
    adapter_out: Width | None = None  # adapters' output size, i.e. their token width (None: as trained)


@dataclass
class FusionInputs:
    """What ``erc train fusion`` (and ``erc tune fusion``) reads besides the corpus."""
    text: str = "st:all-MiniLM-L6-v2"  # text tokens: finetuned:MODEL_DIR | st:MODEL (frozen) | parquet:PATH[#column]
    text_layers: Count = TEXT_LAYERS  # st: vectors read the frozen encoder's last N layers, each mean-pooled and unit-normalised, concatenated (1: the model's sentence vector)
    second_text: str | None = None  # a second text token per turn, same forms as text (st:all-MiniLM-L6-v2 beside finetuned:DIR: the fine-tuned MELD recipe of bench/RESULTS.md)
    features: str | None = field(default=None, metadata=PATH)  # feature folder of `erc preprocess` (speaker and face vectors)
    speaker_adapter: str | None = field(default=None, metadata=PATH)  # adapter model folder for the speaker vectors
    face_adapter: str | None = field(default=None, metadata=PATH)  # adapter model folder for the face vectors
    text_only: bool = False  # text tokens only (no speaker or face vectors)
    drop: list[Literal["speaker", "face"]] = field(default_factory=list)  # modalities left out (ablation)


@dataclass
class TextRecipe:
    """``erc train text``: the context text encoder fine-tuned for emotion."""
    encoder: str = field(default="all-MiniLM-L6-v2", metadata={"fixed_only": True, **PATH})  # model folder or a name the registry finds (all-MiniLM-L6-v2, all-mpnet-base-v2 after `erc models fetch`)
    model: TextModelConfig = _flat(TextModelConfig)
    loop: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, batch_size=16, lr=5e-5),
                              metadata=FLAT)
    splits: Splits = _flat(Splits)
    class_weight_power: Annotated[float, Field(ge=0, le=2)] = 0.5  # class weights (N / (C n_c)) ** power; 0 = unweighted


@dataclass
class AdapterRecipe:
    """``erc train adapter``: an identity -> emotion adapter on a unimodal emotion corpus."""
    size: AdapterConfig = _flat(AdapterConfig)
    training: AdapterTraining = field(default_factory=AdapterTraining, metadata=FLAT)
    train_split: str = "train"  # speech: the split to train on; the others are held out
    test_groups: list[str] = field(default_factory=list)  # face: subject ids held out for testing
    profile: str = "offline"  # model profile of the identity embedder
    backend: str | None = None  # identity backend override (resemblyzer, dlib, facenet, ...)
    weights: str | None = field(default=None, metadata=PATH)  # weights path for the identity backend


# -- the main job ---------------------------------------------------------------------------

@dataclass
class QCSection:
    """Quality control in the main job."""
    enabled: bool = True  # run QC (else every utterance is trained on)
    checks: QCConfig = _flat(QCConfig)


@dataclass
class TrainSection:
    """Adapters, the fusion model and its evaluation in the main job."""
    enabled: bool = True  # train and evaluate (else the job ends after QC)
    modalities: list[Literal["text", "speaker", "face"]] = field(
        default_factory=lambda: ["text", "speaker", "face"])  # what the fusion model reads
    # identity -> emotion adapters trained on the run's training split, or none (raw vectors)
    adapters: Literal["train_split", "none"] = "train_split"
    adapter_training: AdapterTraining = field(default_factory=AdapterTraining, metadata={"prefix": "adapter"})
    text_tokens: Literal["frozen", "finetuned", "both"] = field(default="frozen", metadata={"help": (
        "the fusion model's text tokens: frozen, the pass's text vectors (preprocess.text_layers); finetuned, "
        "the context text encoder fine-tuned on the training split first (stage text); "
        "both, the fine-tuned vectors and the frozen ones, two tokens per turn")})
    # the text encoder's training when text_tokens is finetuned or both (its splits: the fusion model's)
    text_training: TextRecipe = field(default_factory=TextRecipe, metadata={"prefix": "text"})
    recipe: FusionRecipe = _flat(FusionRecipe)
    eval_splits: list[str] = field(default_factory=lambda: ["dev", "test"])  # splits evaluated after training


@dataclass
class RunConfig:
    output_dir: str = field(default="runs/default", metadata=PATH)  # where every stage writes (a folder or a storage URI)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    qc: QCSection = field(default_factory=QCSection)
    train: TrainSection = field(default_factory=TrainSection)


# -- loading --------------------------------------------------------------------------------

SECTIONS = tuple(f for f in RunConfig.__dataclass_fields__ if f != "output_dir")


def load_run_config(path=None, overrides: dict | None = None) -> RunConfig:
    """The run config of a YAML file (None: the defaults) with ``overrides`` (a tree of
    ``-o section.key=value`` values) merged in, validated. A relative ``corpus.path`` is
    taken from the config file's folder (a config travels with its corpus); output_dir
    from the working directory. A path starting with ``~`` is in the home folder (both are
    ``path`` settings: no shell expands one written in a file or after ``--out=``). Either
    may be a storage URI (s3://...)."""
    from pathlib import Path

    from erc.corpus.mapping import RunConfigLoader
    from erc.errors import ConfigError
    from erc.settings import load_yaml, merge, validate
    from erc.storage import is_uri

    data = load_yaml(path, RunConfigLoader) if path is not None else {}
    where = str(path) if path is not None else "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections ({', '.join(SECTIONS)})")
    try:
        config = validate(RunConfig, merge(data, overrides or {}),
                          "command line" if overrides else where)
    except ConfigError:
        validate(RunConfig, data, where)  # a mistake in the file names the file
        raise
    corpus_path = config.corpus.path
    if path is not None and corpus_path and not is_uri(corpus_path):
        expanded = Path(corpus_path)
        if not expanded.is_absolute():
            try:
                config.corpus.path = str((Path(path).parent / expanded).resolve())
            except (RuntimeError, OSError) as err:  # RuntimeError: Python 3.11's symlink loop
                raise ConfigError(f"{where}: corpus.path {corpus_path}: cannot be followed "
                                  f"({err})") from None
    return config


# The main job's own keys of a run config's train: section, which erc train fusion (it reads
# the rest of that section) does not have: the sample's enabled: was "unknown key 'enabled'".
MAIN_JOB_TRAIN_KEYS = frozenset(f for f in TrainSection.__dataclass_fields__ if f != "recipe")


def section_data(data, section: str):
    """A command's section of a config file: the section of a run config (a mapping of
    sections; ``train.text_training``: a section inside one), or the whole file when it is
    a bare section (``best_config.yaml``)."""
    if isinstance(data, dict) and data and set(data) <= set(SECTIONS) | {"output_dir"}:
        found = data
        for key in section.split("."):  # a section that is no mapping: the caller says so
            found = found.get(key) if isinstance(found, dict) else found
        if section == "train" and isinstance(found, dict):
            found = {k: v for k, v in found.items() if k not in MAIN_JOB_TRAIN_KEYS}
        return {} if found is None else found  # an empty list or 0 is no section either
    return data
