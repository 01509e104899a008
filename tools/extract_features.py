"""Precompute text-to-image features: the same program as ``crossflow extract`` (see its ``--help``).

    python tools/extract_features.py configs/t2i/dit_256_clip.yaml --jsonl pairs.jsonl --image-root imgs --out feats
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossflow.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
