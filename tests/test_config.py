import re

import pytest

from erc.cli import main
from erc.errors import ConfigError
from erc.recipes import CorpusConfig, FusionRecipe, RunConfig, load_run_config
from erc.settings import load_yaml, option_map, options, to_data, tree, validate


def test_sample_config_loads_and_points_at_the_shipped_corpus():
    from importlib import resources
    from pathlib import Path

    config = load_run_config(Path(str(resources.files("erc") / "configs" / "sample.yaml")))
    assert isinstance(config, RunConfig)
    assert Path(config.corpus.path).is_file()
    assert config.corpus.check_media is True
    assert config.ray.address is None


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("output_dir: x\ncorpus:\n  path: a.csv\n  chek_media: true\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: corpus: unknown key 'chek_media' "
                                          r"\(did you mean 'check_media'\?\)"):
        load_run_config(path)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"config: corpus.max_clip_seconds: Input should be a "
                                          r"valid number \(got 'long'\)"):
        validate(RunConfig, {"corpus": {"max_clip_seconds": "long"}})
    with pytest.raises(ConfigError, match=r"check_media: Input should be a valid boolean"):
        validate(CorpusConfig, {"check_media": "yes"})


def test_a_value_of_a_union_is_one_line_naming_the_setting():
    """A count or [min, max] failed once per member of its type, each under the member's
    name (``decode.concurrency.constrained-int: ...; decode.concurrency.list[...]: ...``)."""
    for value, expected in ((0, "concurrency: Input should be greater than or equal to 1 (got 0)"),
                            ([0, 2], "concurrency.0: Input should be greater than or equal to 1"),
                            ("x", "concurrency: Input should be a valid integer (got 'x')")):
        with pytest.raises(ConfigError) as err:
            validate(RunConfig, {"preprocess": {"decode": {"concurrency": value}}})
        assert str(err.value).startswith("config: preprocess.decode." + expected), err.value
        assert str(err.value).count("config:") == 1, err.value


def test_booleans_accept_only_true_and_false():
    for text in ("false", "no", "0", 0, 1, "off"):
        with pytest.raises(ConfigError, match="valid boolean"):
            validate(CorpusConfig, {"check_media": text})


def test_int_is_accepted_for_float_and_null_for_optional():
    config = validate(RunConfig, {"corpus": {"max_clip_seconds": 30}, "ray": {"address": None}})
    assert config.corpus.max_clip_seconds == 30.0
    assert config.ray.address is None


def test_flattened_recipe_keys_and_errors_use_the_names_users_write():
    config = validate(RunConfig, {"train": {"epochs": 3, "mixer": "transformer",
                                            "no_context": True, "workers": 2}})
    recipe = config.train.recipe
    assert (recipe.loop.epochs, recipe.model.mixer, recipe.model.isolate_turns,
            recipe.loop.num_workers) == (3, "transformer", True, 2)
    with pytest.raises(ConfigError, match=r"config: train.lr: Input should be greater than 0"):
        validate(RunConfig, {"train": {"lr": 0}})
    with pytest.raises(ConfigError, match=r"train: unknown key 'mixr' \(did you mean 'mixer'"):
        validate(RunConfig, {"train": {"mixr": "mamba"}})
    assert to_data(config)["train"]["epochs"] == 3  # the inverse keeps the flat keys



def test_a_section_check_names_the_keys_users_write():
    """A check of a whole section (qc's alignment rule, the speakers' apply) named its
    attribute path, qc.checks.alignment: a key no config holds (qc.checks is the list of
    checks), so following the message gave another error."""
    with pytest.raises(ConfigError, match=r"^command line: qc\.alignment: alignment rule must"):
        validate(RunConfig, {"qc": {"alignment": {"rule": "fast"}}}, "command line")
    with pytest.raises(ConfigError, match=r"^config: qc\.speakers: speaker apply must"):
        validate(RunConfig, {"qc": {"speakers": {"apply": "some"}}})


def test_a_pool_size_ray_data_refuses_is_a_config_error():
    """decode.concurrency [1, 2] (decode runs tasks) and an actor pool [3, 1] passed the
    config and failed in Ray Data as the pass was built, after Ray started: a traceback."""
    for stage, size, said in (("decode", [1, 2], "a number of tasks at once"),
                              ("faces", [3, 1], "[min, max] with min <= max")):
        with pytest.raises(ConfigError, match=rf"^config: preprocess: {stage}\.concurrency "
                                              rf"\[\d, \d\]: expected .*{re.escape(said)}"):
            validate(RunConfig, {"preprocess": {stage: {"concurrency": size}}})
    assert validate(RunConfig, {"preprocess": {"faces": {"concurrency": [1, 3]}}})


def test_window_text_inputs_without_future_turns_are_a_config_error():
    """erc train text --inputs window (future_turns 0) started Ray and loaded the encoder,
    then the model refused it on a worker: an internal error with Ray's traceback."""
    from erc.recipes import TextRecipe

    for data in ({"inputs": "window"}, {"inputs": "window", "future_turns": 2, "pooling": "cls"}):
        with pytest.raises(ConfigError, match=r"^command line: inputs window .* needs future_turns"):
            validate(TextRecipe, data, "command line")
    assert validate(TextRecipe, {"inputs": "window", "future_turns": 2}).model.inputs == "window"


def test_one_home_per_default():
    """The command line, the tune knobs and the run config read the recipes' defaults."""
    from erc.tune.space import FAMILIES

    fusion = option_map(FusionRecipe)
    assert fusion["lr"].default == FusionRecipe().loop.lr == FAMILIES["fusion"]["lr"].default
    assert fusion["d_state"].default == FAMILIES["fusion"]["d_state"].default == FusionRecipe().model.d_state
    assert RunConfig().train.recipe.loop.epochs == FusionRecipe().loop.epochs
    names = [o.name for o in options(RunConfig)]
    assert len(names) == len(set(names))


def test_relative_corpus_path_is_taken_from_the_config_folder(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.yaml").write_text("corpus:\n  path: data/m.csv\n")
    config = load_run_config(tmp_path / "c" / "run.yaml")
    assert config.corpus.path == str(tmp_path / "c" / "data" / "m.csv")


def test_paths_starting_with_a_tilde_are_in_the_home_folder(tmp_path, monkeypatch):
    """No shell expands "~" in a config file (or in --out=~/...): output_dir: ~/runs/x made
    a folder named "~" in the working directory, and ~/data/m.csv named no corpus."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "run.yaml").write_text("output_dir: ~/runs/x\ncorpus:\n  path: ~/data/m.csv\n")
    config = load_run_config(tmp_path / "run.yaml")
    assert config.output_dir == str(tmp_path / "home" / "runs" / "x")
    assert config.corpus.path == str(tmp_path / "home" / "data" / "m.csv")
    config = load_run_config(tmp_path / "run.yaml", {"output_dir": "~/runs/y"})  # erc run --out=~/...
    assert config.output_dir == str(tmp_path / "home" / "runs" / "y")



def test_an_erc_home_starting_with_a_tilde_is_in_the_home_folder(tmp_path, monkeypatch):
    """ERC_HOME='~/erc' (quoted, or set where no shell expands it: a unit file, a runtime
    env) made a folder named "~" in the working directory for erc's caches and Ray's HOME."""
    from erc.home import state_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ERC_HOME", "~/erc-state")
    monkeypatch.chdir(tmp_path)
    assert state_dir() == tmp_path / "home" / "erc-state"
    assert not (tmp_path / "~").exists()

def test_every_command_reads_a_path_starting_with_a_tilde_in_the_home_folder(tmp_path, monkeypatch,
                                                                           sample_manifest):
    """--out=~/x (no shell expands "~" after "="), a path setting given by -o or a config
    file, and a path flag of any command are in the home folder; a storage URI stays as it is.
    Taken as written they made a folder named "~" in the working directory."""
    from erc.cli import build_parser
    from erc.cli.common import recipe
    from erc.qc.decisions import QCConfig
    from erc.recipes import FusionInputs, PreprocessConfig, TextRecipe

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    parse = build_parser().parse_args
    (tmp_path / "c.yaml").write_text("preprocess:\n  output_dir: ~/features\n")

    args = parse(["train", "fusion", "~/corpus", "--out=~/fusion", "--features=~/features",
                  "--speaker-adapter=~/a", "-o", "storage=~/ray", "--text", "finetuned:~/text/model"])
    assert (args.corpus, args.out, args.features) == (f"{home}/corpus", f"{home}/fusion", f"{home}/features")
    assert recipe(FusionRecipe, args, args.recipe_options, "train").loop.storage_path == f"{home}/ray"
    inputs = validate(FusionInputs, {o.name: getattr(args, o.name) for o in args.input_options
                                     if hasattr(args, o.name)})
    assert inputs.speaker_adapter == f"{home}/a"
    from erc.train.vectors import parse_feature
    assert parse_feature(inputs.text, "text")["path"] == f"{home}/text/model"
    args = parse(["train", "text", "c", "--out=~/text", "--storage=~/ray", "--encoder=~/enc"])
    text = recipe(TextRecipe, args, args.recipe_options, "text")
    assert (args.out, text.loop.storage_path, text.encoder) == (f"{home}/text", f"{home}/ray", f"{home}/enc")
    args = parse(["train", "adapter", "face", "~/ck", "--out=~/adapter", "--weights=~/w.dat"])
    assert (args.corpus, args.out, args.weights) == (f"{home}/ck", f"{home}/adapter", f"{home}/w.dat")
    args = parse(["tune", "fusion", "c", "--out=~/tune", "--storage=~/ray", "--features=~/f"])
    assert (args.out, args.storage, args.features) == (f"{home}/tune", f"{home}/ray", f"{home}/f")
    args = parse(["evaluate", "~/m1/model", "~/m2/model", "c", "--out=~/eval", "--features=~/f"])
    assert args.model == [f"{home}/m1/model", f"{home}/m2/model"]
    assert (args.out, args.features) == (f"{home}/eval", f"{home}/f")
    args = parse(["preprocess", "c", "--config=c.yaml"])
    assert recipe(PreprocessConfig, args, args.recipe_options, "preprocess").output_dir == f"{home}/features"
    args = parse(["preprocess", "c", "--out=~/features"])
    assert args.out == f"{home}/features"
    args = parse(["qc", "~/features", "--utterances=~/corpus", "--out=~/qc", "-o", "relabels=~/r.csv",
                  "--face-references=~/photos"])
    assert (args.features, args.utterances, args.out) == (f"{home}/features", f"{home}/corpus", f"{home}/qc")
    qc = recipe(QCConfig, args, args.recipe_options, "qc")
    assert (qc.relabels, qc.face_references) == (f"{home}/r.csv", f"{home}/photos")
    args = parse(["corpus", "ingest", "m.csv", "--out=~/corpus", "--media-root=~/media", "--mapping=~/m.yaml"])
    assert (args.out, args.media_root, args.mapping) == (f"{home}/corpus", f"{home}/media", f"{home}/m.yaml")
    uri = "s3://bucket/runs/x?endpoint_override=127.0.0.1:9000"
    args = parse(["train", "fusion", "c", f"--out={uri}", "-o", f"storage={uri}"])
    assert args.out == uri and recipe(FusionRecipe, args, args.recipe_options).loop.storage_path == uri

    # and a real command writes there, leaving no folder "~" behind
    assert main(["corpus", "ingest", str(sample_manifest), "--out=~/corpus"]) == 0
    assert (home / "corpus" / "utterances.parquet").is_file()
    assert not (tmp_path / "~").exists()


def test_overrides_merge_into_the_file(tmp_path):
    (tmp_path / "run.yaml").write_text("train:\n  epochs: 3\n  lr: 0.01\n")
    config = load_run_config(tmp_path / "run.yaml", {"train": {"epochs": 5}})
    assert (config.train.recipe.loop.epochs, config.train.recipe.loop.lr) == (5, 0.01)


def test_a_setting_given_twice_is_refused(tmp_path, capsys, sample_manifest):
    """`-o lr=1e-3 -o lr=3e-4` trained with the second, without a word of the first: one of
    the two is a mistake. Now every command that takes -o refuses a key given twice (exit
    2, both values named, nothing written); a flag still wins over -o, as it always did."""
    for argv in (["train", "fusion", str(sample_manifest), "-o", "lr=1e-3", "-o", "lr=3e-4"],
                 ["run", "-o", "train.epochs=2", "-o", "train.epochs=3"],
                 ["run", "-o", "train.loop.lr=0.1", "-o", "train.loop=5"],
                 ["corpus", "ingest", str(sample_manifest), "-o", "keep_missing_media=true",
                  "-o", "keep_missing_media=false"]):
        assert main([*argv, "--out", str(tmp_path / "out")]) == 2, argv
        err = capsys.readouterr().err
        assert "given twice" in err and "Traceback" not in err, (argv, err)
        assert not (tmp_path / "out").exists()
    assert tree([("output_dir", "a"), ("train.lr", 1)]) == {"output_dir": "a", "train": {"lr": 1}}


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_run_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="a folder, not a config file"):
        load_run_config(tmp_path)
    (tmp_path / "broken.yaml").write_text("corpus: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_run_config(tmp_path / "list.yaml")


def test_yaml_aliases_are_refused_so_a_config_cannot_expand_itself(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for name, prev in zip("bcdefghi", "abcdefgh"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="anchors"):
        load_yaml(bomb)


def test_messages_cut_long_values():
    with pytest.raises(ConfigError) as err:
        validate(CorpusConfig, {"format": ["x" * 5000]})
    assert len(str(err.value)) < 300


def test_a_command_config_that_is_not_a_mapping_is_one_line(tmp_path, capsys):
    """--config of every command: a list, a scalar or a section that is a list."""
    corpus = tmp_path / "m.csv"
    corpus.write_text("dialogue_id,speaker,text\nd,Ann,Hi.\n")
    configs = {"list.yaml": ("- a\n- b\n", "list.yaml: expected a mapping"),
               "scalar.yaml": ("5\n", "scalar.yaml: expected a mapping"),
               "section.yaml": ("train: [1, 2]\nqc: {}\n", "section.yaml: train: expected a mapping"),
               # an empty list or a false scalar was read as an empty section, unsaid
               "empty-list.yaml": ("train: []\n", "empty-list.yaml: train: expected a mapping"),
               "zero.yaml": ("train: 0\n", "zero.yaml: train: expected a mapping")}
    for name, (text, fragment) in configs.items():
        (tmp_path / name).write_text(text)
        config = str(tmp_path / name)
        for argv in (["train", "fusion", str(corpus), "--out", str(tmp_path / "f")],
                     ["train", "text", str(corpus), "--out", str(tmp_path / "t")],
                     ["corpus", "ingest", str(corpus), "--out", str(tmp_path / "i")],
                     ["preprocess", str(tmp_path / "i"), "--out", str(tmp_path / "p")]):
            if name not in ("list.yaml", "scalar.yaml") and argv[1] != "fusion":
                continue  # only erc train fusion reads the train: section
            assert main([*argv, "--config", config]) == 2, (name, argv)
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and fragment in err, (name, argv, err)
    assert not any((tmp_path / out).exists() for out in "ftip")


def test_a_key_written_twice_is_named_not_lost(tmp_path):
    """Two train: sections (or two epochs:) would silently keep only the last one."""
    for text, key, lines in (("train:\n  epochs: 3\ntrain:\n  lr: 0.1\n", "'train'", (3, 1)),
                             ("train:\n  epochs: 3\n  epochs: 4\n", "'epochs'", (3, 2)),
                             ("train: {epochs: 3, epochs: 4}\n", "'epochs'", (1, 1))):
        (tmp_path / "twice.yaml").write_text(text)
        with pytest.raises(ConfigError, match=rf"twice.yaml: line {lines[0]}: key {key} is "
                                              rf"written twice \(first on line {lines[1]}\)"):
            load_run_config(tmp_path / "twice.yaml")


def test_a_bad_value_is_blamed_on_where_it_was_written(tmp_path, capsys):
    """A bad -o value or flag was reported as a mistake of the config file (which does not
    hold it); a mistake of the file still names the file, and an override may fix it."""
    (tmp_path / "good.yaml").write_text("train:\n  lr: 0.01\n")
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: 0\n")
    good, bad = str(tmp_path / "good.yaml"), str(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=r"^command line: train.epochs: Input should be"):
        load_run_config(tmp_path / "good.yaml", {"train": {"epochs": 0}})
    with pytest.raises(ConfigError, match=r"bad.yaml: train.epochs: Input should be"):
        load_run_config(tmp_path / "bad.yaml", {"train": {"lr": 0.5}})
    assert load_run_config(tmp_path / "bad.yaml", {"train": {"epochs": 3}}).train.recipe.loop.epochs == 3
    out = str(tmp_path / "out")
    for argv, fragment in ((["--config", good, "--epochs", "0"], "command line: epochs"),
                           (["--config", good, "-o", "epochz=1"], "command line: unknown key 'epochz'"),
                           (["--config", bad, "--lr", "0.5"], "bad.yaml: train: epochs")):
        assert main(["train", "fusion", str(tmp_path / "m.csv"), "--out", out, *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), (argv, err)
        assert fragment in err and ("bad.yaml" in fragment or "yaml" not in err), (argv, err)



def test_train_commands_read_their_section_of_a_run_config(tmp_path, capsys):
    """README: a command's --config takes a run config and reads its own section. The
    sample's train: (enabled, modalities, ...) was "unknown key 'enabled'" for erc train
    fusion, erc train text read nothing of it (train.text_training), silently, and erc train
    adapter refused it."""
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  enabled: true\n  modalities: [text]\n  epochs: 3\n"
                      "  text_training: {epochs: 0}\n  adapter_training: {patience: 0}\n")
    nowhere = str(tmp_path / "nowhere")  # each stops at the missing corpus once the config is read
    assert main(["train", "fusion", nowhere, "--out", str(tmp_path / "f"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown key" not in err and "does not exist" in err, err
    assert main(["train", "text", nowhere, "--out", str(tmp_path / "t"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"erc: error: {config}: train.text_training: epochs: Input should be "
                          f"greater than or equal to 1"), err
    # and erc train adapter its train.adapter_training (it said "unknown key 'train'")
    assert main(["train", "adapter", "speaker", nowhere, "--out", str(tmp_path / "a"),
                 "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"erc: error: {config}: train.adapter_training: patience: Input should "
                          f"be greater than or equal to 1"), err

def test_a_value_json_cannot_hold_names_its_key(tmp_path):
    """A YAML date or binary value named only the file, not the setting that holds it."""
    import datetime

    (tmp_path / "when.yaml").write_text("corpus:\n  options: {since: 2024-01-01}\ntrain: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"when.yaml: corpus.options.since: a value of type date"):
        load_run_config(tmp_path / "when.yaml")
    with pytest.raises(ConfigError, match=r"^config: train.epochs: a value of type bytes"):
        validate(RunConfig, {"train": {"epochs": b"3"}})
    with pytest.raises(ConfigError, match=r"^x: epochs: a value of type date"):
        validate(FusionRecipe, {"epochs": datetime.date(2024, 1, 1)}, "x")


def test_yaml_nested_too_deep_is_one_line(tmp_path, capsys):
    """[[[[...]]]] a few thousand levels deep exhausted the YAML parser's recursion: a
    traceback thousands of lines long."""
    (tmp_path / "deep.yaml").write_text("train: {lr: " + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(ConfigError, match=r"deep.yaml: nested too deep"):
        load_run_config(tmp_path / "deep.yaml")
    assert main(["run", "--dry-run", "--config", str(tmp_path / "deep.yaml")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "deep.yaml: nested too deep" in err, err[-300:]


def test_ingest_flags_and_reader_options_win_over_the_config_file(tmp_path, capsys):
    """The documented order is file, then -o, then flags; ingest's --format and its reader
    options (-o, --split, --media-root, --mapping) went in under the file, which won."""
    import json

    (tmp_path / "m.csv").write_text("dialogue_id,speaker,text\nd,Ann,Hi.\nd,Bob,Yo.\n")
    (tmp_path / "c.yaml").write_text("corpus:\n  format: meld\n  options: {split: dev}\n")
    assert main(["corpus", "ingest", str(tmp_path / "m.csv"), "--config", str(tmp_path / "c.yaml"),
                 "--format", "manifest", "-o", "split=test", "--out", str(tmp_path / "o"),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["splits"]) == {"test"}


def test_help_shows_a_default_of_zero(capsys):
    """`erc train text --help` showed no default for --future-turns, --seed or
    --average-epochs: a default of 0 compared equal to False, the one hidden for a switch
    that is off. The README quotes those defaults (0: causal; 0 outside fusion)."""
    with pytest.raises(SystemExit):
        main(["train", "text", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "past turns only) (default: 0)" in out
    assert "batch order (default: 0)" in out
    assert re.search(r"the weights as trained\) \(default: 0\.0\)", out), out
