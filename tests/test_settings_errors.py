"""One-line config errors that say where the problem is: a YAML syntax error names the
file, line and column; a number where a path (a string) is expected names the key."""

import pytest

from erc.errors import ConfigError
from erc.recipes import load_run_config
from erc.settings import parse_value


def test_a_tab_in_yaml_names_the_file_line_and_column(tmp_path):
    """It said only "not valid YAML: while scanning for the next token"."""
    path = tmp_path / "run.yaml"
    path.write_text("output_dir: out\ncorpus:\n\tpath: corpus\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not valid YAML at line 3, column 1: found character '\\t'")
    assert "while scanning for the next token" in message
    assert "indent with spaces, not tabs" in message
    assert "\n" not in message


def test_other_yaml_syntax_errors_name_the_line_and_column(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("output_dir: out\ntrain:\n  epochs: 3\n  modalities: [text\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: not valid YAML at line 5, column 1: "
                                          r"expected ',' or '\]'"):
        load_run_config(path)
    with pytest.raises(ConfigError, match="value: not valid YAML at line 1, column 5: "
                                          "mapping values are not allowed here"):
        parse_value("a: b: c")


@pytest.mark.parametrize("value", ["5", "5.0", "true", "[a]"])
def test_a_path_setting_must_be_a_string(tmp_path, value):
    """``output_dir: 5`` is not read as the folder "5": strict validation names the key."""
    path = tmp_path / "run.yaml"
    path.write_text(f"output_dir: {value}\n")
    with pytest.raises(ConfigError, match=f"{path.name}: output_dir: Input should be a valid string"):
        load_run_config(path)
    with pytest.raises(ConfigError, match="command line: corpus.path: Input should be a valid string"):
        load_run_config(None, {"corpus": {"path": 5}})
