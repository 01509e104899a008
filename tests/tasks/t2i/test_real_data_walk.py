"""docs/text_to_image.md "On real data", walked as a new user: one's own images with captions, a tiny random
CLIP and AutoencoderKL saved locally, the shipped paper config from outside the clone, the documented block as
written: extract → train --smoke → resume with only --resume train.max_steps=N → sample → eval.
Also the language-model width, read from where it already is (the model, then the features)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from string import Template

import pytest
import yaml
from PIL import Image

pytest.importorskip("transformers")
pytest.importorskip("diffusers")

from crossflow.cli import main as cli_main  # noqa: E402
from crossflow.config import ConfigError  # noqa: E402
from crossflow.registry import load_experiment  # noqa: E402
from helpers.image_folder import make_image_folder  # noqa: E402
from helpers.paths import REPO_ROOT  # noqa: E402

CONFIG = "t2i/dit_256_clip"  # the paper config, by its shipped name


def _models(setup) -> list[str]:
    """The keys docs/text_to_image.md names: local model directories (and the features directory)."""
    return [f"task.language_model.name_or_path={setup['clip']}", f"task.vae.name_or_path={setup['vae']}"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_clip_text, tiny_vae):
    root = tmp_path_factory.mktemp("walk")
    jsonl, images, records = make_image_folder(root / "data", 20)  # 18 usable: one corrupt, one missing
    setup = {"root": root, "clip": tiny_clip_text, "vae": tiny_vae, "jsonl": jsonl, "images": images,
             "feats": root / "features" / "clip_256", "records": records}
    rc = cli_main(["extract", CONFIG, *_models(setup), "--jsonl", str(jsonl), "--image-root", str(images),
                   "--out", str(setup["feats"]), "--num-workers", "0"])
    assert rc == 0  # the paper config states no LM width: the tiny CLIP's 32 is read from the model
    return setup


def documented_smoke_block() -> list[list[str]]:
    """The commands of the first bash block of docs/text_to_image.md "On real data" (variables kept as $NAME)."""
    text = (REPO_ROOT / "docs" / "text_to_image.md").read_text(encoding="utf-8")
    section = text.split("## On real data", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "crossflow":
            commands.append(words[1:])
    return commands


def test_walk_the_documented_smoke_run(setup, tmp_path: Path, monkeypatch, capsys) -> None:
    """docs/text_to_image.md, "On your own small data first", as written, from a directory outside the clone;
    only the step counts are cut (train.max_steps=4, then 6) to keep the test short."""
    commands = documented_smoke_block()
    assert [c[0] for c in commands] == ["extract", "train", "train", "sample", "eval"]
    monkeypatch.chdir(tmp_path)
    shutil.copytree(setup["images"], "data/imgs")
    shutil.copy(setup["jsonl"], "data/img_text_pair.jsonl")
    Path("prompts.txt").write_text("a photo of the cat\na red car\n")
    variables = {"CLIP": str(setup["clip"]), "VAE": str(setup["vae"])}
    extract, train, resume, sample, evaluate = [[Template(w).substitute(variables) for w in c] for c in commands]
    assert "--smoke" in train and resume[:4] == ["train", "--run-dir", "runs/smoke", "--resume"]
    assert resume[4:] == ["train.max_steps=400"]
    for argv in (extract, train + ["train.max_steps=4"], resume[:4] + ["train.max_steps=6"], sample, evaluate):
        capsys.readouterr()
        assert cli_main(argv) == 0, argv
    run = Path("runs/smoke")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["batch_size"] == 16 and saved["model"]["velocity_net"]["depth"] == 2
    assert saved["task"]["language_model"]["dim"] is None  # not typed anywhere: read from the features
    assert json.loads((run / "train_summary.json").read_text())["step"] == 6
    assert Image.open("outputs/smoke/0003.png").size == (256, 256)
    rows = [json.loads(line) for line in Path("runs/smoke/eval/samples/prompts.jsonl").read_text().splitlines()]
    assert [r["file"] for r in rows] == ["0000.png", "0001.png"]  # NNNN.png, as `sample` and the docs name them
    assert json.loads(Path("runs/smoke/eval/metrics.json").read_text())["settings"]["num_prompts"] == 2


def test_width_is_read_from_the_features(setup) -> None:
    cfg, task_cls = load_experiment(CONFIG, [f"task.features_dir={setup['feats']}", *_models(setup)])
    assert cfg.task.language_model.dim is None and task_cls(cfg).source_spec().dim == 32


def test_an_explicit_width_that_disagrees_is_refused_naming_both(setup, tmp_path: Path, capsys) -> None:
    cfg, task_cls = load_experiment(CONFIG, [f"task.features_dir={setup['feats']}", *_models(setup),
                                             "task.language_model.dim=768"])
    with pytest.raises(ConfigError, match=r"task\.language_model\.dim: the config says 768 .* 32-wide"):
        task_cls(cfg).source_spec()
    rc = cli_main(["extract", CONFIG, *_models(setup), "task.language_model.dim=768", "--jsonl", str(setup["jsonl"]),
                   "--image-root", str(setup["images"]), "--out", str(tmp_path / "f"), "--num-workers", "0"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("crossflow extract")]
    assert rc == 2 and len(err) == 1 and "the config says 768" in err[0] and "32-wide" in err[0]
