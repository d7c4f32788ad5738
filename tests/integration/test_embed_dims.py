"""Which embedders may be cut to fewer dimensions (Matryoshka), decided from the model's own files, and the
refusals of a cut or a blank text the facade makes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from qrank import Embedder, InvalidInput
from qrank.models.st_embedder import declares_matryoshka


@pytest.fixture(scope="module")
def minilm_copy(minilm_dir, tmp_path_factory):
    """A copy of the shared MiniLM folder whose files a test may change (the weights are linked, not copied)."""
    dst = tmp_path_factory.mktemp("minilm-copy")
    for f in minilm_dir.iterdir():
        if f.is_file():
            (dst / f.name).symlink_to(f) if f.suffix == ".safetensors" else shutil.copy(f, dst / f.name)
        else:
            shutil.copytree(f, dst / f.name)
    return dst


def test_the_shared_minilm_declares_no_matryoshka(minilm_dir, minilm):
    assert declares_matryoshka(minilm_dir) is False
    assert minilm.info.supports_dims is False


def test_truncate_dim_in_the_st_config_declares_it(minilm_copy, minilm):
    cfg_path = minilm_copy / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "truncate_dim": 128}))  # what SentenceTransformer(truncate_dim=128) saves
    try:
        assert declares_matryoshka(minilm_copy) is True
        em = Embedder.from_pretrained(str(minilm_copy), device="cpu")
        assert em.info.supports_dims is True
        full = minilm.embed("a question", is_query=True)
        cut = em.embed("a question", is_query=True, dim=128)
        np.testing.assert_allclose(cut, full[:128] / np.linalg.norm(full[:128]), atol=1e-6)
    finally:
        cfg_path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("tags,declared", [
    (["sentence-transformers", "loss:MatryoshkaLoss", "loss:MultipleNegativesRankingLoss"], True),  # ST's trainer
    (["loss:Matryoshka2dLoss"], True),
    (["sentence-transformers", "Matryoshka"], True),  # the hub's tag
    (["sentence-transformers", "matryoshka-doll-pictures"], False),
    ([], False),
])
def test_model_card_tags_declare_it(minilm_copy, tags, declared):
    card = minilm_copy / "README.md"
    original = card.read_text()
    meta = "---\nlibrary_name: sentence-transformers\ntags:\n" + "".join(f"- {t}\n" for t in tags) + "---\n"
    card.write_text(meta + "# a model\n")
    try:
        assert declares_matryoshka(minilm_copy) is declared
    finally:
        card.write_text(original)


def test_a_malformed_card_declares_nothing(minilm_copy):
    card = minilm_copy / "README.md"
    original = card.read_text()
    card.write_text("---\ntags: [matryoshka\n---\n")
    try:
        assert declares_matryoshka(minilm_copy) is False
    finally:
        card.write_text(original)


def test_qwen3_embedding_takes_any_width(qwen3_embedder):
    assert qwen3_embedder.info.supports_dims is True
    full = qwen3_embedder.embed("a question", is_query=True)
    cut = qwen3_embedder.embed("a question", is_query=True, dim=16)
    np.testing.assert_allclose(cut, full[:16] / np.linalg.norm(full[:16]), atol=1e-5)


def test_minilm_refuses_a_cut_but_takes_its_full_width(minilm):
    np.testing.assert_array_equal(minilm.embed(["a text"], dim=384), minilm.embed(["a text"]))
    with pytest.raises(InvalidInput, match=r"does not support other dimensions than 384 \(not a Matryoshka model\)") \
            as err:
        minilm.embed("a text", dim=128)
    assert err.value.field == "dim"
    with pytest.raises(InvalidInput) as err:
        minilm.embed("a text", dim=385)
    assert err.value.field == "dim"


@pytest.mark.parametrize("texts,field", [([""], "texts[0]"), (["ok", "  \n\t"], "texts[1]"), ("\u3000", "texts[0]")])
def test_blank_texts_are_refused(minilm, texts, field):
    with pytest.raises(InvalidInput, match="must not be empty or blank") as err:
        minilm.embed(texts)
    assert err.value.field == field
