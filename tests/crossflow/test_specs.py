"""Source and target specs: shapes, construction from a shape, and sizes that cannot be."""

from __future__ import annotations

import pytest

from crossflow.specs import ImageSpec, TokenSpec


def test_specs_describe_shapes():
    assert TokenSpec(max_tokens=77, dim=768).shape == (77, 768) and TokenSpec(4, 2).kind == "tokens"
    spec = ImageSpec.of((4, 32, 16))
    assert spec == ImageSpec(4, 32, 16) and spec.shape == (4, 32, 16) and spec.kind == "image"
    assert ImageSpec.of(spec.shape) == spec  # round trip
    with pytest.raises(AttributeError):
        spec.channels = 3  # frozen: a spec is a value


@pytest.mark.parametrize("make, message", [
    (lambda: TokenSpec(0, 8), "max_tokens >= 1"),
    (lambda: TokenSpec(4, 0), "dim >= 1"),
    (lambda: ImageSpec(3, 0, 8), r"sizes must be >= 1, got \(3, 0, 8\)"),
])
def test_impossible_sizes_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
