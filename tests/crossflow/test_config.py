"""Tests for crossflow.config (typed dataclass configs, YAML and dotted overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import yaml

from crossflow.config import (
    ConfigError,
    apply_overrides,
    describe,
    from_dict,
    load_config,
    load_yaml,
    parse_overrides,
    replace_path,
    save_yaml,
    to_dict,
)
from helpers.paths import REPO_ROOT


@dataclass
class NetCfg:
    depth: int = 4
    width: int = field(default=64, metadata={"help": "hidden width"})
    act: Literal["gelu", "silu"] = "gelu"


@dataclass
class ModelCfg:
    name: str
    net: NetCfg = field(default_factory=NetCfg)
    betas: tuple[float, float] = (0.9, 0.999)
    scales: tuple[int, ...] = (1, 2)


@dataclass
class EmaCfg:
    decay: float = 0.999


@dataclass
class TrainCfg:
    max_steps: int = 100
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    amp: bool = False
    seed: Optional[int] = None
    grad_clip: float | None = 1.0
    tags: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    ema: Optional[EmaCfg] = None

    def __post_init__(self) -> None:
        if self.max_steps <= 0:
            raise ValueError("max_steps must be positive")


@dataclass
class RootCfg:
    model: ModelCfg
    train: TrainCfg = field(default_factory=TrainCfg)


FULL = {
    "model": {"name": "dit", "net": {"depth": 8, "width": 128, "act": "silu"},
              "betas": [0.5, 0.9], "scales": [1, 2, 4]},
    "train": {"max_steps": 10, "lr": 0.0001, "amp": True, "seed": 3, "grad_clip": None,
              "tags": ["a", "b"], "weights": {"x": 1.0}, "ema": {"decay": 0.99}},
}


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(FULL))
    cfg = load_config(RootCfg, path)
    assert cfg.model.betas == (0.5, 0.9) and cfg.model.scales == (1, 2, 4)
    assert cfg.train.ema == EmaCfg(0.99)
    assert to_dict(cfg) == FULL
    out = tmp_path / "sub" / "saved.yaml"
    save_yaml(cfg, out)
    assert load_config(RootCfg, out) == cfg
    assert load_yaml(out) == FULL


def test_defaults_and_tuple_conversion():
    cfg = from_dict(RootCfg, {"model": {"name": "m", "betas": [0, 1]}})
    assert cfg.model.net == NetCfg()
    assert cfg.model.betas == (0.0, 1.0) and isinstance(cfg.model.betas[0], float)
    assert cfg.train == TrainCfg()
    with pytest.raises(ConfigError, match=r"model\.betas: expected tuple\[float, float\] with 2 items"):
        from_dict(RootCfg, {"model": {"name": "m", "betas": [1, 2, 3]}})
    with pytest.raises(ConfigError, match=r"model\.scales\[1\]: expected int"):
        from_dict(RootCfg, {"model": {"name": "m", "scales": [1, "x"]}})


def test_parse_overrides_value_types():
    parsed = dict(parse_overrides(["a.b=1", "lr=1e-4", "flag=true", "xs=[1, 2]", "s=null",
                                   "name=hello", "eq=a=b", "empty="]))
    assert parsed == {"a.b": 1, "lr": "1e-4", "flag": True, "xs": [1, 2], "s": None,
                      "name": "hello", "eq": "a=b", "empty": ""}
    with pytest.raises(ConfigError, match="train.max_steps"):
        parse_overrides(["train.max_steps"])
    with pytest.raises(ConfigError, match=r"a\.\.b=1"):
        parse_overrides(["a..b=1"])


def test_apply_overrides_nested_creation_and_copy():
    data = {"train": {"lr": 1.0}, "x": 5}
    out = apply_overrides(data, [("train.lr", 2.0), ("model.net.depth", 3), ("train.ema.decay", 0.5)])
    assert out == {"train": {"lr": 2.0, "ema": {"decay": 0.5}}, "x": 5, "model": {"net": {"depth": 3}}}
    assert data == {"train": {"lr": 1.0}, "x": 5}
    with pytest.raises(ConfigError, match=r"x\.y"):
        apply_overrides(data, [("x.y", 1)])


def test_load_config_with_overrides_and_base(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: dit\ntrain:\n  max_steps: 5\n")
    base = {"model": {"net": {"depth": 2}}, "train": {"amp": True}}
    cfg = load_config(RootCfg, path, ["train.lr=1e-4", "train.amp=false", "train.tags=[x, y]",
                                      "train.seed=null", "model.net.width=32", "train.ema.decay=0.9"],
                      base=base)
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.amp is False and cfg.train.tags == ["x", "y"] and cfg.train.seed is None
    assert cfg.model.net == NetCfg(depth=2, width=32)
    assert cfg.train.max_steps == 5 and cfg.train.ema == EmaCfg(0.9)
    cfg2 = load_config(RootCfg, overrides=[("model.name", "z")])
    assert cfg2.model.name == "z"


def test_unknown_key_names_path_and_suggests():
    with pytest.raises(ConfigError) as exc:
        from_dict(RootCfg, {"model": {"name": "m", "net": {"dpeth": 3}}})
    msg = str(exc.value)
    assert msg.startswith("model.net.dpeth: unknown key 'dpeth'")
    assert "did you mean 'depth'?" in msg and "valid keys: depth, width, act" in msg
    with pytest.raises(ConfigError) as exc:
        load_config(RootCfg, overrides=["model.name=m", "train.zzz=1"])
    assert "train.zzz" in str(exc.value) and "did you mean" not in str(exc.value)


@pytest.mark.parametrize(
    "train, pattern",
    [
        ({"max_steps": "abc"}, r"train\.max_steps: expected int, got str 'abc'"),
        ({"max_steps": 1.5}, r"train\.max_steps: expected int, got float 1\.5"),
        ({"max_steps": True}, r"train\.max_steps: expected int, got bool"),
        ({"lr": "fast"}, r"train\.lr: expected float, got str 'fast'"),
        ({"lr": False}, r"train\.lr: expected float, got bool"),
        ({"amp": 1}, r"train\.amp: expected bool, got int 1"),
        ({"amp": "yes"}, r"train\.amp: expected bool"),
        ({"seed": "x"}, r"train\.seed: expected int \| None, got str"),
        ({"tags": "a"}, r"train\.tags: expected list\[str\], got str"),
        ({"weights": {"x": "y"}}, r"train\.weights\.x: expected float"),
        ({"ema": 3}, r"train\.ema: expected a mapping"),
        ({"ema": {"decay": "q"}}, r"train\.ema\.decay: expected float"),
    ],
)
def test_wrong_type_names_key(train, pattern):
    with pytest.raises(ConfigError, match=pattern):
        from_dict(RootCfg, {"model": {"name": "m"}, "train": train})


def test_float_accepts_int_and_numeric_string():
    cfg = from_dict(TrainCfg, {"lr": 2, "grad_clip": "1e-4"})
    assert cfg.lr == 2.0 and isinstance(cfg.lr, float) and cfg.grad_clip == pytest.approx(1e-4)


def test_literal_lists_choices():
    with pytest.raises(ConfigError, match=r"model\.net\.act: .*'relu'.*one of 'gelu', 'silu'"):
        from_dict(RootCfg, {"model": {"name": "m", "net": {"act": "relu"}}})


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"model\.name: missing required key"):
        from_dict(RootCfg, {"model": {}})
    with pytest.raises(ConfigError, match=r"^model: missing required key"):
        from_dict(RootCfg, {})
    with pytest.raises(ConfigError, match=r"^model: expected a mapping"):
        from_dict(RootCfg, {"model": None})


def test_optional_fields():
    cfg = from_dict(TrainCfg, {"seed": 7, "grad_clip": None, "ema": None})
    assert cfg.seed == 7 and cfg.grad_clip is None and cfg.ema is None
    assert from_dict(TrainCfg, {"ema": {}}).ema == EmaCfg()


def test_post_init_error_gets_path():
    with pytest.raises(ConfigError, match=r"^train: max_steps must be positive"):
        from_dict(RootCfg, {"model": {"name": "m"}, "train": {"max_steps": 0}})
    with pytest.raises(ConfigError, match=r"^TrainCfg: max_steps must be positive"):
        from_dict(TrainCfg, {"max_steps": -1})


def test_load_yaml_errors_name_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_yaml(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\nb: }")
    with pytest.raises(ConfigError, match="bad.yaml.*invalid YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml.*mapping"):
        load_yaml(lst)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}


def test_replace_path():
    cfg = from_dict(RootCfg, {"model": {"name": "m"}})
    new = replace_path(cfg, "model.net.depth", 12)
    assert new.model.net.depth == 12 and cfg.model.net.depth == 4
    assert replace_path(cfg, "train.ema", EmaCfg(0.5)).train.ema == EmaCfg(0.5)
    with pytest.raises(ConfigError, match=r"model\.net\.depth: expected int"):
        replace_path(cfg, "model.net.depth", "deep")
    with pytest.raises(ConfigError, match=r"model\.net\.dpth.*did you mean 'depth'"):
        replace_path(cfg, "model.net.dpth", 1)


def test_describe_lists_leaves_with_help():
    rows = {key: (tp, default, help_) for key, tp, default, help_ in describe(RootCfg)}
    assert rows["model.name"] == ("str", "<required>", "")
    assert rows["model.net.width"] == ("int", "64", "hidden width")
    assert rows["model.net.act"][0] == "Literal['gelu', 'silu']"
    assert rows["model.betas"] == ("tuple[float, float]", "(0.9, 0.999)", "")
    assert rows["train.lr"] == ("float", "0.001", "learning rate")
    assert rows["train.seed"][0] == "int | None"
    assert rows["train.tags"][1] == "[]"
    assert rows["train.ema"] == ("EmaCfg | None", "None", "") and "train.ema.decay" in rows
    assert "model.net" not in rows and "train" not in rows


# ---------------------------------------------------------------- tagged unions
@dataclass
class TokensEnc:
    arch: Literal["tokens"] = field(default="tokens", metadata={"help": "a token encoder"})
    width: int = field(default=8, metadata={"help": "token width"})
    depth: int = 2


@dataclass
class ImageEnc:
    arch: Literal["image"] = field(default="image", metadata={"help": "an image encoder"})
    widths: list[int] = field(default_factory=lambda: [4, 8])


@dataclass
class NoiseEnc:
    arch: Literal["noise"] = "noise"


@dataclass
class UnionRoot:
    encoder: TokensEnc | ImageEnc | NoiseEnc = field(default_factory=ImageEnc, metadata={"help": "the encoder"})
    spare: Optional[TokensEnc | NoiseEnc] = None
    steps: int = 1


def test_tagged_union_dispatches_on_the_tag():
    cfg = from_dict(UnionRoot, {"encoder": {"arch": "tokens", "width": 16}})
    assert cfg.encoder == TokensEnc(width=16)
    assert from_dict(UnionRoot, {"encoder": {"arch": "noise"}}).encoder == NoiseEnc()
    assert from_dict(UnionRoot, {"encoder": {"arch": "image", "widths": [1]}}).encoder == ImageEnc(widths=[1])
    assert from_dict(UnionRoot, {"spare": {"arch": "noise"}}).spare == NoiseEnc()
    assert from_dict(UnionRoot, {"spare": None}).spare is None


def test_tagged_union_without_tag_is_the_default_class():
    assert from_dict(UnionRoot, {"encoder": {"widths": [2, 3]}}).encoder == ImageEnc(widths=[2, 3])
    assert from_dict(UnionRoot, {}).encoder == ImageEnc()
    with pytest.raises(ConfigError, match=r"^encoder\.width: unknown key 'width' \(did you mean 'widths'\?\); "
                                          r"valid keys for arch='image': arch, widths$"):
        from_dict(UnionRoot, {"encoder": {"width": 3}})
    # a union whose default is None has no default class: the tag is required
    with pytest.raises(ConfigError, match=r"^spare\.arch: missing; valid: 'tokens', 'noise'$"):
        from_dict(UnionRoot, {"spare": {"width": 3}})


def test_tagged_union_unknown_tag_lists_the_choices():
    with pytest.raises(ConfigError, match=r"^encoder\.arch: unknown 'foo'; valid: 'tokens', 'image', 'noise'$"):
        from_dict(UnionRoot, {"encoder": {"arch": "foo"}})
    with pytest.raises(ConfigError, match=r"^encoder\.arch: unknown 3; valid"):
        from_dict(UnionRoot, {"encoder": {"arch": 3}})
    with pytest.raises(ConfigError, match=r"^encoder: expected a mapping \(TokensEnc \| ImageEnc \| NoiseEnc\)"):
        from_dict(UnionRoot, {"encoder": "tokens"})


def test_tagged_union_rejects_keys_of_another_member_and_wrong_types():
    with pytest.raises(ConfigError, match=r"^encoder\.depth: unknown key 'depth'; valid keys for arch='noise': "
                                          r"arch$"):
        from_dict(UnionRoot, {"encoder": {"arch": "noise", "depth": 3}})
    with pytest.raises(ConfigError, match=r"^encoder\.width: expected int, got str 'wide'"):
        from_dict(UnionRoot, {"encoder": {"arch": "tokens", "width": "wide"}})
    # switching the tag by an override leaves the old member's keys behind: named, not silently dropped
    data = {"encoder": {"arch": "tokens", "width": 16}}
    with pytest.raises(ConfigError, match=r"^encoder\.width: unknown key 'width'.*for arch='image'"):
        load_config(UnionRoot, base=data, overrides=["encoder.arch=image"])
    assert load_config(UnionRoot, base=data, overrides=["encoder={arch: image}"]).encoder == ImageEnc()


def test_tagged_union_round_trips_through_to_dict_and_yaml(tmp_path):
    cfg = UnionRoot(encoder=TokensEnc(width=3), spare=NoiseEnc(), steps=4)
    data = to_dict(cfg)
    assert data == {"encoder": {"arch": "tokens", "width": 3, "depth": 2}, "spare": {"arch": "noise"}, "steps": 4}
    assert from_dict(UnionRoot, data) == cfg
    save_yaml(cfg, tmp_path / "u.yaml")
    assert load_config(UnionRoot, tmp_path / "u.yaml") == cfg
    assert replace_path(cfg, "encoder", ImageEnc(widths=[9])).encoder == ImageEnc(widths=[9])
    assert replace_path(cfg, "encoder.depth", 5).encoder == TokensEnc(width=3, depth=5)


def test_describe_lists_the_tag_and_every_members_fields():
    rows = {key: (tp, default, help_) for key, tp, default, help_ in describe(UnionRoot)}
    assert rows["encoder.arch"] == ("Literal['tokens', 'image', 'noise']", "'image'",
                                    "the encoder; tokens: a token encoder; image: an image encoder; noise")
    assert rows["encoder.width [arch=tokens]"] == ("int", "8", "token width")
    assert rows["encoder.depth [arch=tokens]"][:2] == ("int", "2")
    assert rows["encoder.widths [arch=image]"][:2] == ("list[int]", "[4, 8]")
    assert rows["spare.arch"][:2] == ("Literal['tokens', 'noise'] | None", "None")
    assert "spare.width [arch=tokens]" in rows and rows["steps"][:2] == ("int", "1")
    assert not any(key.startswith("encoder.arch [") or key == "encoder" for key in rows)  # one tag row, no section


def test_experiment_schema_members_and_errors():
    from crossflow.schema import (CrossFlowModelConfig, DiMRConfig, DiTConfig, ExperimentConfig, ImageVEConfig,
                                  NoiseSourceConfig, ReductionVEConfig, TokenVEConfig, XAttnBaselineConfig)

    cfg = from_dict(ExperimentConfig, {})
    assert cfg.model == CrossFlowModelConfig()
    assert isinstance(cfg.model.source_encoder, TokenVEConfig) and isinstance(cfg.model.velocity_net, DiTConfig)
    model = from_dict(ExperimentConfig, {"model": {"source_encoder": {"arch": "reduction"},
                                                   "velocity_net": {"arch": "dimr"}}}).model
    assert model.source_encoder == ReductionVEConfig() and model.velocity_net == DiMRConfig()
    assert from_dict(ExperimentConfig, {"model": {"source_encoder": {"arch": "noise"}}}).model.source_encoder == \
        NoiseSourceConfig()
    base = from_dict(ExperimentConfig, {"model": {"kind": "xattn_baseline", "null_tokens": 2}}).model
    assert base == XAttnBaselineConfig(null_tokens=2)
    with pytest.raises(ConfigError, match=r"^model\.source_encoder\.arch: unknown 'foo'; valid: 'tokens', "
                                          r"'reduction', 'image', 'noise'$"):
        from_dict(ExperimentConfig, {"model": {"source_encoder": {"arch": "foo"}}})
    with pytest.raises(ConfigError, match=r"^model\.source_encoder: expected a mapping"):
        from_dict(ExperimentConfig, {"model": {"source_encoder": "image"}})
    with pytest.raises(ConfigError, match=r"^model\.source_encoder\.image_widths: unknown key 'image_widths' "
                                          r"\(did you mean 'widths'\?\)"):
        from_dict(ExperimentConfig, {"model": {"source_encoder": {"arch": "image", "image_widths": [8]}}})
    with pytest.raises(ConfigError, match=r"^model\.source_encoder: unknown key 'source_encoder'.*"
                                          r"for kind='xattn_baseline'"):
        from_dict(ExperimentConfig, {"model": {"kind": "xattn_baseline", "source_encoder": {}}})
    with pytest.raises(ConfigError, match=r"^model\.velocity_net\.arch: invalid value 'dimr'; expected one of 'dit'"):
        from_dict(ExperimentConfig, {"model": {"kind": "xattn_baseline", "velocity_net": {"arch": "dimr"}}})
    with pytest.raises(ConfigError, match=r"^model\.velocity_net\.stages\[1\]: kernel_size must be odd"):
        from_dict(ExperimentConfig, {"model": {"velocity_net": {"arch": "dimr", "stages": [{}, {"kernel_size": 4}]}}})
    for ve in (TokenVEConfig(tile=4), ReductionVEConfig(head="adaptor"), ImageVEConfig(blocks=2), NoiseSourceConfig()):
        saved = to_dict(CrossFlowModelConfig(source_encoder=ve))
        assert saved["source_encoder"]["arch"] == ve.arch
        assert from_dict(ExperimentConfig, {"model": saved}).model.source_encoder == ve
    rows = {r[0] for r in describe(ExperimentConfig)}
    assert {"model.kind", "model.source_encoder.arch [kind=crossflow]",
            "model.source_encoder.widths [kind=crossflow, arch=image]",
            "model.velocity_net.stages [kind=crossflow, arch=dimr]",
            "model.velocity_net.depth [kind=xattn_baseline]", "model.null_tokens [kind=xattn_baseline]"} <= rows


def test_switching_arch_by_override_names_the_keys_left_behind():

    from crossflow.schema import DiMRConfig, ExperimentConfig, ImageVEConfig

    toy = REPO_ROOT / "configs" / "t2i" / "toy.yaml"  # a token VE with width, depth, ...
    with pytest.raises(ConfigError, match=r"^model\.source_encoder\.width: unknown key 'width' \(did you mean "
                                          r"'widths'\?\); valid keys for arch='image': arch, widths, blocks"):
        load_config(ExperimentConfig, toy, ["model.source_encoder.arch=image"])
    with pytest.raises(ConfigError, match=r"^model\.velocity_net\.patch_size: unknown key.*for arch='dimr'"):
        load_config(ExperimentConfig, toy, ["model.velocity_net.arch=dimr"])
    cfg = load_config(ExperimentConfig, toy, ["model.source_encoder={arch: image, blocks: 2}",
                                              "model.velocity_net={arch: dimr}"])
    assert cfg.model.source_encoder == ImageVEConfig(blocks=2) and cfg.model.velocity_net == DiMRConfig()
