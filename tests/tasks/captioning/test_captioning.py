"""Caption tokenizer, text VAE codec, caption metrics (against pycocoevalcap called directly) and the adapter."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from crossflow.codecs.text_vae import TextVAE, TextVAEConfig, token_accuracy
from crossflow.task import experiment_from_dict
from crossflow.train.trainer import export_model
from tasks.captioning.metrics import SCORE_KEYS, attribute_accuracy, caption_scores, spice_unavailable_reason
from tasks.captioning.vocab import CaptionTokenizer
from tasks.toyworld.scenes import PALETTE, POSITIONS, SHAPES, SIZES, TEMPLATES, Scene, caption, parse_caption


def all_toy_captions() -> list[str]:
    scenes = [Scene(c, s, z, p) for c, s, z, p in itertools.product(PALETTE, SHAPES, SIZES, POSITIONS)]
    return [caption(scene, t) for scene in scenes for t in range(len(TEMPLATES))]


def test_tokenizer_round_trips_every_toy_caption():
    tok = CaptionTokenizer(max_length=16)
    captions = all_toy_captions()
    assert len(captions) == 6 * 3 * 2 * 5 * 8
    ids, mask = tok.encode(captions)
    assert ids.shape == mask.shape == (len(captions), 16)
    assert tok.decode(ids) == captions
    assert torch.equal(mask, ids != tok.pad_id)  # words and <eos> are real, the rest is padding
    assert int(tok.unk_id) not in ids.tolist()
    with pytest.raises(ValueError, match="max_length=4"):
        CaptionTokenizer(max_length=4).encode(["a large red circle in the center"])
    unknown, _ = tok.encode(["a huge red circle"])
    assert tok.decode(unknown) == ["a red circle"]  # unknown words are dropped when decoding


def test_text_vae_shapes_and_loss_are_cross_entropy_plus_weighted_kl():
    torch.manual_seed(0)
    cfg = TextVAEConfig(latent_channels=2, latent_size=2, embed_dim=16, width=32, encoder_depth=1, decoder_depth=1,
                        num_heads=2, num_queries=2, memory_tokens=2, kl_weight=0.1)
    vae = TextVAE(11, 6, cfg)
    ids = torch.tensor([[5, 6, 7, 1, 0, 0], [8, 1, 0, 0, 0, 0]])
    mask = ids != 0
    post = vae.encode(ids)
    assert post.mean.shape == (2, 2, 2, 2)
    assert vae.logits(post.mean).shape == (2, 6, 11) and vae.decode(post.mean).shape == (2, 6)
    gen = torch.Generator().manual_seed(3)
    out = vae({"ids": ids, "mask": mask}, generator=gen)
    z = post.mean + post.std * torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(3))
    logits = vae.logits(z)
    ce = F.cross_entropy(logits[mask], ids[mask])  # mean over the 6 real positions
    torch.testing.assert_close(out.recon, ce.detach())
    torch.testing.assert_close(out.loss, ce + 0.1 * post.kl().mean())
    assert set(out.scalars()) == {"loss", "loss_recon", "loss_kl", "token_accuracy"}
    assert token_accuracy(torch.tensor([[1, 2, 0]]), torch.tensor([[1, 3, 0]]), torch.tensor([[True, True, False]])) == 0.5
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        vae.encode(ids[:, :5])


def test_caption_scores_equal_pycocoevalcap_called_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = {1: ["A large red circle in the center.", "there is a red circle at the center, it is large"],
            2: ["a small blue square in the top left"],
            3: ["in the bottom right of the picture sits a small green triangle", "small green triangle, bottom right"]}
    cands = {1: "a large red circle in the center", 2: "a small blue circle in the top right",
             3: "a small green triangle at the bottom right"}
    scores = caption_scores(refs, cands)
    assert tuple(scores) == SCORE_KEYS

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": r} for r in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in cands.items()})
    bleu, _ = Bleu(4).compute_score(gts, res)
    for n in range(4):
        assert scores[f"BLEU-{n + 1}"] == pytest.approx(bleu[n])
    assert scores["METEOR"] == pytest.approx(Meteor().compute_score(gts, res)[0])
    assert scores["ROUGE-L"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert scores["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0])
    if spice_unavailable_reason() is not None:  # offline: no CoreNLP jars; SPICE is None, the rest still returns
        assert scores["SPICE"] is None
    assert scores["BLEU-1"] > scores["BLEU-4"] > 0

    with pytest.raises(ValueError, match="same ids"):
        caption_scores(refs, {1: "x"})


def test_attribute_accuracy_from_parsed_captions():
    truth = [{"color": "red", "shape": "circle", "size": "large", "position": "top left"},
             {"color": "blue", "shape": "square", "size": "small", "position": "center"}]
    parsed = [parse_caption("top left: one large circle, colored red"), parse_caption("a small blue circle")]
    acc = attribute_accuracy(parsed, truth)
    assert acc == {"color_accuracy": 1.0, "shape_accuracy": 0.5, "size_accuracy": 1.0, "position_accuracy": 0.5,
                   "all_accuracy": 0.5}


def _text_vae_export(tmp_path):
    stage_raw = {"task": {"name": "captioning.text_vae_stage", "toyworld": {"num_train": 64, "num_test": 8},
                          "text_vae": {"latent_channels": 2, "latent_size": 2, "embed_dim": 16, "width": 32,
                                       "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "num_queries": 2,
                                       "memory_tokens": 2}}}
    cfg, stage_cls = experiment_from_dict(stage_raw)
    torch.manual_seed(0)
    export_model(stage_cls(cfg).build_model().state_dict(), cfg, tmp_path / "tvae" / "export")
    return tmp_path / "tvae"


def test_captioning_adapter_shapes_and_evaluation_files(tmp_path):
    tvae = _text_vae_export(tmp_path)
    cfg, task_cls = experiment_from_dict({
        "task": {"name": "captioning", "toyworld": {"num_train": 64, "num_test": 4, "resolution": 16},
                 "text_vae_dir": str(tvae), "text_vae_config": None, "target": "sample"},
        "model": {"source_encoder": {"arch": "image", "image_widths": [8, 16]},
                  "velocity_net": {"patch_size": 1, "hidden_size": 32, "depth": 1, "num_heads": 2},
                  "contrastive": {"enabled": False}},
        "sample": {"steps": 2, "guidance": 1.0, "batch_size": 4, "z0": "sample"}})
    task = task_cls(cfg)
    assert task.latent_shape == (2, 2, 2) and task.source_shape == (3, 16, 16)
    assert not any(p.requires_grad for p in task.text_vae.parameters())
    data = task.train_dataset()
    raw = data.__getitems__([0, 1, 2])
    torch.manual_seed(0)
    batch = task.prepare_batch(raw, torch.device("cpu"))
    assert set(batch) == {"source", "target"}
    assert batch["source"].shape == (3, 3, 16, 16) and batch["target"].shape == (3, 2, 2, 2)
    assert not torch.equal(batch["target"], raw["text_mean"])  # a posterior draw, not the mean
    task.tc.target = "mean"
    assert torch.equal(task.prepare_batch(raw, torch.device("cpu"))["target"], raw["text_mean"])
    model = task.build_model()
    assert torch.isfinite(model.loss(batch).loss)
    captions = task.generate_captions(model.eval(), batch["source"], steps=1)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)


def test_captioning_evaluation_writes_metrics_and_pictures(tmp_path):
    tvae = _text_vae_export(tmp_path)
    cfg, task_cls = experiment_from_dict({
        "task": {"name": "captioning", "toyworld": {"num_train": 16, "num_test": 3, "resolution": 16},
                 "text_vae_dir": str(tvae), "text_vae_config": None},
        "model": {"source_encoder": {"arch": "image", "image_widths": [8]},
                  "velocity_net": {"patch_size": 1, "hidden_size": 32, "depth": 1, "num_heads": 2},
                  "contrastive": {"enabled": False}},
        "sample": {"steps": 1, "guidance": 1.0, "batch_size": 4}})
    task = task_cls(cfg)
    metrics = task.evaluate(task.build_model().eval(), tmp_path / "eval")
    assert {"BLEU-4", "CIDEr", "all_accuracy", "text_vae_reconstruction", "z0_sample"} <= set(metrics)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["settings"]["references"] == "all_templates"
    lines = (tmp_path / "eval" / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 3 and (tmp_path / "eval" / "captions.png").is_file()


def test_captioning_without_a_text_vae_names_the_key(tmp_path):
    cfg, task_cls = experiment_from_dict({"task": {"name": "captioning", "text_vae_dir": str(tmp_path / "none"),
                                                   "text_vae_config": None}})
    task = task_cls(cfg)
    with pytest.raises(FileNotFoundError, match="task.text_vae_dir"):
        task.latent_shape
    with pytest.raises(FileNotFoundError, match="task.text_vae_dir"):
        task.text_vae


def test_captioning_shapes_come_from_the_text_vae_config_without_training(tmp_path):
    cfg, task_cls = experiment_from_dict({"task": {"name": "captioning", "text_vae_dir": str(tmp_path / "tvae"),
                                                   "text_vae_config": "configs/captioning/toy_text_vae.yaml",
                                                   "text_vae_overrides": ["task.text_vae.latent_size=2"]}})
    with torch.device("meta"):
        model = task_cls(cfg).build_model()  # what `crossflow params` does
    assert model.velocity_net.latent_shape == (4, 2, 2)
    assert not (tmp_path / "tvae").exists()  # nothing was trained
