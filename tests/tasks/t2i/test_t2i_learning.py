"""Learning test of text-to-image on the toy world: far above chance on the analytic checker (marked slow)."""

from __future__ import annotations

import pytest

from crossflow.pipeline import Pipeline


@pytest.mark.slow
def test_toy_text_to_image_beats_chance_by_a_wide_margin(toy_t2i_run, tmp_path):
    """Real MiniLM → VE → DiT on the toy world: ~2 minutes on 2 cores (the session's shared run, `toy_t2i_run` in
    tests/tasks/conftest.py, also inverted by the CrossFlow-T2I captioning learning test).

    Colour, position and size are the first attributes the model picks up: 300 steps (batch 32) gave colour 1.00,
    position 1.00, size 0.92 (chance 1/6, 1/5, 1/2); shape (0.43) and the null branch need the full demo budget.
    """
    pipe = Pipeline.from_pretrained(toy_t2i_run, device="cpu")
    metrics = pipe.task.evaluator().evaluate(pipe, tmp_path / "eval")
    assert metrics["color_accuracy"] >= 0.8, metrics  # chance: 1/6
    assert metrics["position_accuracy"] >= 0.6, metrics  # chance: 1/5
    assert metrics["size_accuracy"] >= 0.7, metrics  # chance: 1/2
    assert (tmp_path / "eval" / "samples" / "prompts.jsonl").is_file()
    assert (tmp_path / "eval" / "trajectory.gif").is_file()
