"""Training batches: the 9:1 mixture, the skip budget for corrupt files, the flip, and a CrossFlow loss on toy
Hypersim + Virtual KITTI batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from crossflow.data.sampler import ResumableBatchSampler
from crossflow.registry import experiment_from_dict
from tasks.depth.toy_training import (open_toy, write_toy_hypersim, write_toy_kitti_train, write_toy_nyu_mat,
                                      write_toy_vkitti)
from tasks.depth.training import (MARIGOLD_PROBABILITIES, DepthTrainingPairs, MixtureDataset, QuantileNormalizer,
                                  TrainingTransform, in_domain_pairs, zero_shot_pairs)


class _Items(torch.utils.data.Dataset):
    def __init__(self, n: int, tag: str) -> None:
        self.n, self.tag = n, tag

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"tag": self.tag, "i": i}


def test_mixture_is_nine_to_one_reproducible_and_covers_items_evenly():
    a, b = _Items(50, "hypersim"), _Items(20, "vkitti")
    mix = MixtureDataset([a, b], MARIGOLD_PROBABILITIES, length=1000, seed=3)
    assert mix.counts.tolist() == [900, 100]
    tags = [mix[i]["tag"] for i in range(1000)]
    assert tags.count("hypersim") == 900
    assert Counter(mix[i]["i"] for i in range(1000) if tags[i] == "hypersim") == {j: 18 for j in range(50)}
    assert Counter(mix[i]["i"] for i in range(1000) if tags[i] == "vkitti") == {j: 5 for j in range(20)}
    assert 0.8 < tags[:200].count("hypersim") / 200 < 0.97  # shuffled, not blocked
    again = MixtureDataset([a, b], [0.9, 0.1], length=1000, seed=3)
    other = MixtureDataset([a, b], [0.9, 0.1], length=1000, seed=4)
    assert np.array_equal(again.source, mix.source) and np.array_equal(again.item, mix.item)
    assert not np.array_equal(other.source, mix.source)
    # many draws through the trainer's sampler: proportion 0.9
    big = MixtureDataset([a, b], [0.9, 0.1], length=20_000, seed=0)
    draws = [big.locate(i)[0] for batch in ResumableBatchSampler(len(big), 100, seed=1) for i in batch][:5000]
    assert abs(draws.count(0) / len(draws) - 0.9) < 0.02
    assert len(MixtureDataset([a, b], [0.9, 0.1])) == 70  # default epoch: the sources' total size
    with pytest.raises(ValueError, match="sum to 1"):
        MixtureDataset([a, b], [0.9, 0.2])


def test_corrupt_files_are_skipped_counted_and_capped(tmp_path, caplog):
    info = write_toy_hypersim(tmp_path, num=6, resolution=(24, 32))
    reader = open_toy(info)
    root = tmp_path / "train"
    bad = [root / reader.rows[1][1], root / reader.rows[4][0]]
    bad[0].write_bytes(b"not a png")
    bad[1].write_bytes(b"")
    pairs = DepthTrainingPairs(reader, TrainingTransform((8, 8), QuantileNormalizer()), max_skipped=2)
    batch = pairs.__getitems__(list(range(6)))
    assert batch["source"].shape == (6, 3, 8, 8) and batch["target"].shape == (6, 1, 8, 8)
    assert torch.equal(batch["target"][1], pairs[2]["target"])  # index 1 fell through to 2
    assert set(pairs.skipped) == {f"{bad[0]}", f"{bad[1]}"}
    pairs.__getitems__([1, 4])  # the same files again: not counted twice
    assert len(pairs.skipped) == 2
    (root / reader.rows[5][1]).write_bytes(b"broken too")
    with pytest.raises(ValueError, match=r"max_skipped=2.*ai_001_002/depth_plane_cam_00_fr0001.png"):
        pairs[5]


def test_prepare_flips_all_three_maps_together():
    batch = {"source": torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4),
             "target": torch.arange(2 * 2 * 4, dtype=torch.float32).view(2, 1, 2, 4),
             "target_mask": torch.tensor([True, False, False, False]).repeat(2, 1, 2, 1)}
    pairs = DepthTrainingPairs(_Items(1, "x"), TrainingTransform((2, 4), QuantileNormalizer()), hflip_probability=1.0)
    out = pairs.prepare(batch, torch.device("cpu"))
    assert all(torch.equal(out[k], batch[k].flip(-1)) for k in batch)
    keep = DepthTrainingPairs(_Items(1, "x"), TrainingTransform((2, 4), QuantileNormalizer()), hflip_probability=0.0)
    assert all(torch.equal(keep.prepare(batch, torch.device("cpu"))[k], batch[k]) for k in batch)


def _tiny_depth_model():
    cfg, task_cls = experiment_from_dict({
        "task": {"name": "depth", "toyworld": {"num_train": 8, "num_test": 2, "resolution": 16}},
        "model": {"source_encoder": {"arch": "image", "widths": [8, 16]},
                  "velocity_net": {"patch_size": 4, "hidden_size": 32, "depth": 1, "num_heads": 2},
                  "contrastive": {"enabled": False}},
        "flow": {"source_recon_weight": 1.0, "null_probability": 0.0},
    })
    return task_cls(cfg).build_model()


def test_zero_shot_and_in_domain_batches_drive_the_crossflow_loss(tmp_path):
    hypersim = open_toy(write_toy_hypersim(tmp_path / "h", num=4, resolution=(48, 64)))
    vkitti = open_toy(write_toy_vkitti(tmp_path / "v", num=2))
    pairs = zero_shot_pairs(hypersim, vkitti, (16, 16), length=10, seed=0)
    assert sum(pairs.dataset.locate(i)[0] == 0 for i in range(10)) == 9
    batch = pairs.prepare(pairs.__getitems__(list(range(10))), torch.device("cpu"))
    assert batch["source"].dtype == torch.float32
    assert -1.0 <= float(batch["source"].min()) <= float(batch["source"].max()) <= 1.0
    assert -1.0 <= float(batch["target"].min()) and float(batch["target"].max()) <= 1.0
    assert batch["target_mask"].dtype == torch.bool and 0 < batch["target_mask"].float().mean() < 1
    assert torch.all(batch["target"][~batch["target_mask"]] == 1.0)
    torch.manual_seed(0)
    model = _tiny_depth_model()
    # invalid pixels are masked: changing their target leaves the loss unchanged
    moved = {**batch, "target": torch.where(batch["target_mask"], batch["target"], torch.tensor(-1.0))}
    gen = torch.Generator().manual_seed(1)
    a = model(batch, generator=gen).loss
    b = model(moved, generator=torch.Generator().manual_seed(1)).loss
    assert torch.isfinite(a) and torch.allclose(a, b)

    kitti = open_toy(write_toy_kitti_train(tmp_path / "k", num=2))
    nyu = open_toy(write_toy_nyu_mat(tmp_path / "n", num=4))
    for reader, name in [(kitti, "kitti"), (nyu, "nyu")]:
        data = in_domain_pairs(reader, (16, 16), name, hflip_probability=0.0)
        batch = data.__getitems__([0, 1])
        assert batch["target"].shape == (2, 1, 16, 16) and torch.isfinite(model(batch).loss)
