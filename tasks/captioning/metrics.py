"""Caption metrics through pycocoevalcap, and attribute accuracy of toy-world captions.

``caption_scores`` tokenises references and candidates with the PTB tokenizer (Stanford CoreNLP,
Java) and runs BLEU-1..4, METEOR, ROUGE-L, CIDEr and SPICE, as the COCO caption evaluation does.
Scores are on pycocoevalcap's scale (fractions; CIDEr may exceed 1); papers print them ×100.
SPICE needs the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap downloads on first use: when they are
absent (offline) SPICE is reported as ``None`` with a logged reason and nothing is downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Hashable, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

SCORE_KEYS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
ATTRIBUTES: tuple[str, ...] = ("color", "shape", "size", "position")


def spice_unavailable_reason() -> Optional[str]:
    """Why SPICE cannot run here (None when its jars are present)."""
    try:
        import pycocoevalcap.spice as spice_pkg
    except ImportError as exc:  # pragma: no cover - pycocoevalcap is a dependency
        return f"pycocoevalcap.spice cannot be imported ({exc})"
    lib = Path(spice_pkg.__file__).parent / "lib"
    missing = [name for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
               if not (lib / name).is_file()]
    if missing:
        return (f"SPICE needs Stanford CoreNLP 3.6.0 ({', '.join(missing)} missing in {lib}); pycocoevalcap would "
                f"download it from nlp.stanford.edu. Put the jars there to enable SPICE.")
    return None


def caption_scores(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]) -> dict:
    """COCO caption metrics of ``candidates`` against ``references``.

    Args:
        references: id → reference captions (one or more).
        candidates: id → one generated caption; must have the same ids.

    Returns:
        ``BLEU-1``, ``BLEU-2``, ``BLEU-3``, ``BLEU-4``, ``METEOR``, ``ROUGE-L``, ``CIDEr``, ``SPICE`` (None when
        SPICE cannot run; the reason is logged, and :func:`spice_unavailable_reason` gives it).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if set(references) != set(candidates):
        only_ref = sorted(map(str, set(references) - set(candidates)))[:5]
        only_cand = sorted(map(str, set(candidates) - set(references)))[:5]
        raise ValueError(f"references and candidates need the same ids (only in references: {only_ref}, "
                         f"only in candidates: {only_cand})")
    if not candidates:
        raise ValueError("caption_scores needs at least one caption")
    for key, refs in references.items():
        if isinstance(refs, str) or not refs:
            raise ValueError(f"references[{key!r}] must be a non-empty list of strings, got {refs!r}")
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": r} for r in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in candidates.items()})
    out: dict = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu, start=1):
        out[f"BLEU-{n}"] = float(value)
    meteor = Meteor()
    try:
        out["METEOR"] = float(meteor.compute_score(gts, res)[0])
    finally:
        _close_meteor(meteor)
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    out["SPICE"] = _spice(gts, res)
    return out


def _close_meteor(meteor) -> None:
    """Stop the METEOR Java subprocess (pycocoevalcap leaves it running until garbage collection)."""
    proc = getattr(meteor, "meteor_p", None)
    if proc is None:
        return
    with meteor.lock:
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):  # stdin is closed by Meteor.__del__
            if stream is not None:
                stream.close()


def _spice(gts: dict, res: dict) -> Optional[float]:
    reason = spice_unavailable_reason()
    if reason is None:
        try:
            from pycocoevalcap.spice.spice import Spice

            return float(Spice().compute_score(gts, res)[0])
        except Exception as exc:  # noqa: BLE001 - SPICE is optional; the other scores stand
            reason = f"SPICE failed: {type(exc).__name__}: {exc}"
    log.warning("SPICE not computed: %s", reason)
    return None


def attribute_accuracy(parsed: Sequence[Mapping[str, Optional[str]]],
                       truth: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Fraction of captions whose parsed attribute equals the truth, per attribute and for all four.

    Args:
        parsed: attributes recovered from generated captions (None where a caption names none).
        truth: the scenes' attributes.
    """
    if len(parsed) != len(truth) or not truth:
        raise ValueError(f"attribute_accuracy needs matching non-empty lists, got {len(parsed)} and {len(truth)}")
    hits = {a: [p.get(a) == t[a] for p, t in zip(parsed, truth)] for a in ATTRIBUTES}
    out = {f"{a}_accuracy": sum(v) / len(v) for a, v in hits.items()}
    out["all_accuracy"] = sum(all(hits[a][i] for a in ATTRIBUTES) for i in range(len(truth))) / len(truth)
    return out
