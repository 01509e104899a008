"""Image–text readers: JSONL pairs and COCO caption files keep each record's position; bad lines are reported."""

from __future__ import annotations

import json
from pathlib import Path

from crossflow.data.image_text import read_coco_captions, read_image_text_jsonl


def test_readers_keep_positions(tmp_path: Path) -> None:
    lines = ['{"img_path": "a.jpg", "prompt": "a cat"}', "not json", "", '{"img_path": "b.jpg"}',
             '{"img_path": "c.jpg", "prompt": "a dog", "source": "x"}']
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    records, bad = read_image_text_jsonl(tmp_path / "p.jsonl")
    assert [(r.index, r.img_path, r.extra) for r in records] == [(0, "a.jpg", {}), (3, "c.jpg", {"source": "x"})]
    assert [(b["index"], b["line"]) for b in bad] == [(1, 2), (2, 4)] and "prompt" in bad[1]["reason"]
    coco = {"images": [{"id": 9, "file_name": "n.jpg"}, {"id": 2, "file_name": "m.jpg"}],
            "annotations": [{"image_id": 9, "caption": "x "}, {"image_id": 2, "caption": "y"},
                            {"image_id": 9, "caption": "z"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    got = [(r.index, r.img_path, r.prompt, r.extra["image_index"], r.extra["caption_index"])
           for r in read_coco_captions(tmp_path / "c.json")]
    assert got == [(0, "m.jpg", "y", 0, 0), (1, "n.jpg", "x", 1, 0), (2, "n.jpg", "z", 1, 1)]
