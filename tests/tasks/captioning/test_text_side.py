"""The text side of captioning on real captions: Karpathy tokens, the word vocabulary and tokenizer, the LM
tokenizer and its token states, the text VAE over token states, and the text-VAE stage on a COCO-format file
(training through `crossflow train`, the vocabulary saved in config.yaml, held-out evaluation, text_posterior)."""

from __future__ import annotations

import json
import random

import pytest
import torch
import yaml

from crossflow.cli import main
from crossflow.codecs.text_vae import TextVAE, TextVAEConfig
from crossflow.config import ConfigError
from crossflow.encoders.gaussian import DiagonalGaussian
from crossflow.language.hf import TextEmbedder
from crossflow.pipeline import load_model
from crossflow.registry import experiment_from_dict
from crossflow.task import PreparesBatches
from tasks.captioning.text import LMTokenizer, WordTokenizer, build_vocabulary, karpathy_tokens
from tasks.t2i.config import LanguageModelConfig

TINY_VAE = {"latent_channels": 2, "latent_size": 2, "embed_dim": 16, "width": 32, "encoder_depth": 1,
            "decoder_depth": 1, "num_heads": 2, "num_queries": 2, "memory_tokens": 2}
COLOURS, ANIMALS, PLACES = ["red", "blue", "green"], ["cat", "dog"], ["mat", "tree", "car"]
SPLITS = ["train"] * 8 + ["restval"] * 4 + ["val"] * 2 + ["test"] * 3


def write_coco_fixture(path, seed: int = 0):
    """A Karpathy-format dataset_coco.json: 17 images (8 train, 4 restval, 2 val, 3 test), 5 captions each, made of
    the tiny CLIP's words; one rare word ("zebra") appears in a single training caption."""
    rng, images, sentid = random.Random(seed), [], 0
    for imgid, split in enumerate(SPLITS):
        folder = "train2014" if split == "train" else "val2014"
        sentences = []
        for k in range(5):
            raw = f"A {rng.choice(COLOURS)} {rng.choice(ANIMALS)} sat on the {rng.choice(PLACES)}."
            if imgid == 0 and k == 0:
                raw = "A big zebra sat on the mat. "
            sentences.append({"tokens": karpathy_tokens(raw), "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append({"filepath": folder, "filename": f"COCO_{folder}_{imgid:012d}.jpg", "imgid": imgid,
                       "split": split, "cocoid": 1000 + imgid, "sentids": [s["sentid"] for s in sentences],
                       "sentences": sentences})
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def stage_raw(dataset_json, text: dict, max_length: int = 10, **train) -> dict:
    return {"task": {"name": "captioning.text_vae_stage", "dataset": "coco", "max_length": max_length,
                     "coco": {"dataset_json": str(dataset_json)}, "text": text, "text_vae": TINY_VAE},
            "train": {"batch_size": 8, "max_steps": 30, "lr": 3e-3, "warmup_steps": 0, "log_every": 10,
                      "checkpoint_every": 1000, "ema_decay": 0.9, "cpu": True, **train}}


def train_stage(tmp_path, raw: dict, capsys):
    config = tmp_path / "stage.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    rc = main(["train", str(config), "--run-dir", str(run), "--eval"])
    assert rc == 0, capsys.readouterr().err
    assert len(list((run / "previews").glob("step-*.png"))) == 1  # the held-out reconstructions picture
    return run


# ---------------------------------------------------------------- words


def test_karpathy_tokens_and_vocabulary_rules():
    assert karpathy_tokens("A man's bike, parked  by the T-shirt shop. ") == \
        ["a", "mans", "bike", "parked", "by", "the", "tshirt", "shop"]
    tokens = [["b", "a", "c"]] * 3 + [["a", "b", "d", "<unk>"]] * 3 + [["e"]] * 6
    # counts: a 6, b 6, c 3, d 3, e 6, <unk> 3 (never a word)
    assert build_vocabulary(tokens, min_count=3) == ["a", "b", "e"]  # strictly more than 3, ties alphabetical
    assert build_vocabulary(tokens, min_count=2) == ["a", "b", "e", "c", "d"]
    assert build_vocabulary(tokens, min_count=6) == []
    assert build_vocabulary([["x"]] * 6 + [["y"]] * 7) == ["y", "x"]  # default min_count 5: most frequent first


def test_word_tokenizer_truncates_marks_unknown_words_and_round_trips():
    tok = WordTokenizer(["a", "cat", "on", "mat"], max_length=4)
    assert len(tok) == 7 and (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)
    ids, mask = tok.encode(["A cat on a mat.", ["a", "zebra"], "cat", ""])
    assert ids.tolist() == [[3, 4, 5, 1],  # truncated to max_length - 1 words + <eos>, no error
                            [3, 2, 1, 0],  # zebra -> <unk>
                            [4, 1, 0, 0], [1, 0, 0, 0]]
    assert torch.equal(mask, ids != 0) and mask.dtype == torch.bool
    assert tok.decode(ids) == ["a cat on", "a", "cat", ""]  # cut at <eos>, <unk> and padding dropped
    assert tok.decode(torch.tensor([[4, 3, 1, 5]])) == ["cat a"]
    long_tok = WordTokenizer(["a", "cat", "on", "mat"], max_length=8)
    assert long_tok.decode(long_tok.encode(["a cat on a mat"])[0]) == ["a cat on a mat"]
    with pytest.raises(ValueError, match="task.text.vocabulary"):
        WordTokenizer(["a", "a"], max_length=4)
    with pytest.raises(ValueError, match="task.text.vocabulary"):
        WordTokenizer(["<eos>"], max_length=4)


# ---------------------------------------------------------------- language model


def test_lm_tokenizer_ids_decoding_and_token_states(tiny_clip_text):
    lm = LanguageModelConfig(name_or_path=str(tiny_clip_text))
    tok = LMTokenizer(lm, max_length=8)
    assert tok.dim == 32 and tok._embedder is None  # the width from config.json, no weights loaded
    captions = ["a photo of the cat", "a red car", "a big dog sat on the mat tree car"]
    ids, mask = tok.encode(captions)
    assert ids.shape == mask.shape == (3, 8) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [7, 5, 8]  # start + words + end; the long one truncated to 8
    assert ids[1, 5:].tolist() == [tok.pad_id] * 3 and len(tok) == len(tok.tokenizer)
    assert tok.decode(ids) == ["a photo of the cat", "a red car", "a big dog sat on the"]
    garbage = ids.clone()
    garbage[1, 5:] = ids[0, 1:4]  # whatever the decoder predicts after the end is not read
    assert tok.decode(garbage)[1] == "a red car"
    states = tok.states(ids, mask, "cpu")
    reference, ref_mask = TextEmbedder(str(tiny_clip_text), max_length=8)(captions)
    assert states.shape == (3, 8, 32) and states.dtype == torch.float32
    torch.testing.assert_close(states, reference)
    assert torch.equal(mask, ref_mask)
    assert LMTokenizer(LanguageModelConfig(name_or_path="/nonexistent/lm", dim=7), 8).dim == 7  # no files read


def test_lm_tokenizer_ends_bert_captions_at_sep(tmp_path):
    import transformers

    words = ["a", "cat", "sat", "on", "mat"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    transformers.BertTokenizer(str(vocab)).save_pretrained(tmp_path / "bert")
    tok = LMTokenizer(LanguageModelConfig(name_or_path=str(tmp_path / "bert"), dim=16), max_length=6)
    ids, mask = tok.encode(["A cat sat", "a cat sat on a mat"])
    assert ids[0].tolist() == [2, 5, 6, 7, 3, 0] and mask[0].tolist() == [True] * 5 + [False]
    assert ids[1].tolist()[-1] == 3  # truncated, [SEP] kept
    ids[0, 5] = 9  # a word predicted after [SEP] is cut off
    assert tok.decode(ids) == ["a cat sat", "a cat sat on"]
    assert (tok.pad_id, tok.end_id) == (0, 3)


# ---------------------------------------------------------------- the text VAE over token states


def test_text_vae_reads_token_states_and_learns():
    cfg = TextVAEConfig(**{**TINY_VAE, "kl_weight": 1e-3})
    ids_vae = TextVAE(11, 6, cfg)
    torch.manual_seed(0)
    vae = TextVAE(11, 6, cfg, input_dim=24)
    keys = set(vae.state_dict())
    assert set(ids_vae.state_dict()) == keys | {"embed.weight"}  # the ids model keeps its keys; no table here
    assert vae.state_dict()["encoder.input_proj.weight"].shape == (32, 24)
    assert ids_vae.state_dict()["encoder.input_proj.weight"].shape == (32, 16)
    ids = torch.randint(3, 11, (16, 6))
    ids[:, 4] = 1
    ids[:, 5] = 0
    mask = ids != 0
    states = torch.randn(16, 6, 24) + torch.nn.functional.one_hot(ids, 24).float() * 3.0
    post = vae.encode(states, mask)
    assert post.mean.shape == (16, 2, 2, 2) and vae.decode(post.mean).shape == (16, 6)
    with pytest.raises(ValueError, match=r"token states \(B, 6, 24\)"):
        vae.encode(ids, mask)
    with pytest.raises(ValueError, match="'states'"):
        vae({"ids": ids, "mask": mask})
    with pytest.raises(ValueError, match=r"token ids \(B, 6\)"):
        ids_vae.encode(states, mask)
    batch = {"ids": ids, "mask": mask, "states": states}
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        out = vae(batch, generator=gen)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.logs["loss_recon"]))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


# ---------------------------------------------------------------- the stage on COCO


def test_stage_captions_and_errors(tmp_path):
    data = write_coco_fixture(tmp_path / "dataset_coco.json")
    cfg, stage_cls = experiment_from_dict(stage_raw(data, {"kind": "words", "min_count": 5}))
    stage = stage_cls(cfg)
    train = stage.captions("train")
    assert len(train) == 12 * 5 and train[0] == ["a", "big", "zebra", "sat", "on", "the", "mat"]
    assert len(stage.captions("eval")) == 3 * 5  # eval_split test
    # the vocabulary is built when the tokenizer is first needed, from the training split, and kept in the config
    assert cfg.task.text.vocabulary == []
    expected = build_vocabulary(train, 5)
    assert "zebra" not in expected and "big" not in expected and {"a", "sat", "on", "the"} <= set(expected)
    assert len(stage.tokenizer) == 3 + len(expected) and cfg.task.text.vocabulary == expected
    lm_cfg, _ = experiment_from_dict(stage_raw(data, {"kind": "lm"}))
    assert stage_cls(lm_cfg).captions("train")[0] == "A big zebra sat on the mat."
    toy_cfg, _ = experiment_from_dict(stage_raw(data, {"kind": "toy"}))
    with pytest.raises(ConfigError, match="task.text.kind=toy"):
        stage_cls(toy_cfg)
    none_cfg, _ = experiment_from_dict(stage_raw(data, {"kind": "words", "min_count": 1000}))
    with pytest.raises(ConfigError, match="task.text.min_count=1000"):
        stage_cls(none_cfg).build_model()


def test_words_stage_trains_on_coco_and_saves_its_vocabulary(tmp_path, capsys):
    data = write_coco_fixture(tmp_path / "dataset_coco.json")
    run = train_stage(tmp_path, stage_raw(data, {"kind": "words", "min_count": 2}), capsys)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    cfg, stage_cls = experiment_from_dict(stage_raw(data, {"kind": "words", "min_count": 2}))
    expected = build_vocabulary(stage_cls(cfg).captions("train"), 2)
    assert saved["task"]["text"]["vocabulary"] == expected
    assert yaml.safe_load((run / "export" / "config.yaml").read_text())["task"]["text"]["vocabulary"] == expected
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["num_captions"] == 15 and metrics["split"] == "test" and metrics["text_kind"] == "words"
    assert metrics["token_accuracy"] > 0.5  # 30 steps on 60 captions of a 13-word language
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    data.unlink()  # the trained text VAE decodes without the dataset: the vocabulary is in its config
    vae, stage = load_model(run)
    assert vae.input_dim is None and len(stage.tokenizer) == 3 + len(expected)
    post = stage.text_posterior(vae, ["A red cat sat on the mat.", ["a", "dog"]], "cpu")
    assert isinstance(post, DiagonalGaussian) and post.mean.shape == post.logvar.shape == (2, 2, 2, 2)
    assert all(isinstance(t, str) for t in stage.tokenizer.decode(vae.decode(post.mean)))


def test_lm_stage_trains_on_coco_with_token_states(tmp_path, tiny_clip_text, capsys):
    data = write_coco_fixture(tmp_path / "dataset_coco.json")
    text = {"kind": "lm", "language_model": {"name_or_path": str(tiny_clip_text), "dim": 32}}
    cfg, stage_cls = experiment_from_dict(stage_raw(data, text))
    stage = stage_cls(cfg)
    vae = stage.build_model()
    assert vae.input_dim == 32 and vae.vocab_size == len(stage.tokenizer)
    assert stage.tokenizer._embedder is None  # built from the config: no LM weights read
    no_dim, _ = experiment_from_dict(stage_raw(data, {"kind": "lm", "language_model": {
        "name_or_path": str(tiny_clip_text)}}))
    assert stage_cls(no_dim).build_model().input_dim == 32  # the width from the checkpoint's config.json
    dataset = stage.train_dataset()
    assert isinstance(dataset, PreparesBatches) and len(dataset) == 60
    batch = dataset.prepare(dataset.__getitems__([0, 1, 2]), torch.device("cpu"))
    assert batch["states"].shape == (3, 10, 32) and batch["ids"].shape == batch["mask"].shape == (3, 10)
    torch.testing.assert_close(batch["states"], TextEmbedder(str(tiny_clip_text), max_length=10)(
        stage.captions("train")[:3])[0])
    run = train_stage(tmp_path, stage_raw(data, text), capsys)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["num_captions"] == 15 and metrics["text_kind"] == "lm" and 0.0 <= metrics["token_accuracy"] <= 1.0
    vae, stage = load_model(run)
    post = stage.text_posterior(vae, ["a red cat sat on the mat", "a dog"], "cpu")
    assert post.mean.shape == (2, 2, 2, 2)
