import pytest

from erc.config import ConfigError, CorpusConfig, RunConfig, from_dict, load_config


def test_sample_config_loads_and_points_at_the_shipped_corpus():
    from importlib import resources
    from pathlib import Path

    config = load_config(Path(str(resources.files("erc") / "configs" / "sample.yaml")))
    assert isinstance(config, RunConfig)
    assert Path(config.corpus.path).is_file()
    assert config.corpus.check_media is True
    assert config.ray.address is None


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("output_dir: x\ncorpus:\n  path: a.csv\n  chek_media: true\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.corpus: unknown key\(s\) chek_media"):
        load_config(path)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"config.corpus.max_clip_seconds: expected float"):
        from_dict(RunConfig, {"corpus": {"max_clip_seconds": "long"}})
    with pytest.raises(ConfigError, match=r"check_media: expected bool"):
        from_dict(CorpusConfig, {"check_media": "yes"})


def test_int_is_accepted_for_float_and_null_for_optional():
    config = from_dict(RunConfig, {"corpus": {"max_clip_seconds": 30}, "ray": {"address": None}})
    assert config.corpus.max_clip_seconds == 30.0
    assert config.ray.address is None


def test_relative_corpus_path_is_taken_from_the_config_folder(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.yaml").write_text("corpus:\n  path: data/m.csv\n")
    config = load_config(tmp_path / "c" / "run.yaml")
    assert config.corpus.path == str(tmp_path / "c" / "data" / "m.csv")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("corpus: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
