"""Text VAE: shapes, the loss (cross-entropy over real tokens + weighted KL) and the trainer protocol."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossflow.codecs.text_vae import TextVAE, TextVAEConfig, token_accuracy
from crossflow.train.protocol import Trainable, TrainOutput


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
    assert isinstance(out, TrainOutput)
    torch.testing.assert_close(out.logs["loss_recon"], ce.detach())
    torch.testing.assert_close(out.loss, ce + 0.1 * post.kl().mean())
    torch.testing.assert_close(out.logs["loss_kl"], post.kl().mean().detach())
    torch.testing.assert_close(out.logs["token_accuracy"], (logits.argmax(-1)[mask] == ids[mask]).float().mean())
    assert set(out.logs) == {"loss", "loss_recon", "loss_kl", "token_accuracy"}
    pred, ids, mask = torch.tensor([[1, 2, 0]]), torch.tensor([[1, 3, 0]]), torch.tensor([[True, True, False]])
    assert token_accuracy(pred, ids, mask) == 0.5
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        vae.encode(ids[:, :5])


def test_text_vae_is_trainable_and_compiles_encoder_and_decoder():
    vae = TextVAE(11, 6, TextVAEConfig(latent_channels=2, latent_size=2, embed_dim=8, width=16, encoder_depth=1,
                                       decoder_depth=1, num_heads=2, num_queries=1, memory_tokens=1))
    assert isinstance(vae, Trainable)
    assert vae.compile_modules() == [vae.encoder, vae.decoder]
