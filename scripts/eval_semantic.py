"""Measure the semantic cache's decision quality on labeled question pairs.

Every text is embedded once with the local MiniLM model the proxy uses (int8 weights, or ``--float32``); a
pair counts as *served* when the cosine similarity reaches the threshold (and, for the guarded variant, when
``cache.guard`` allows it). Precision is correct hits / served (1.0 when nothing is served); recall is served
hits / labeled hits.

    python -m scripts.eval_semantic [--pairs PATH] [--json OUT] [--float32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from cache.guard import semantic_guard

__all__ = ["DEFAULT_PAIRS", "THRESHOLDS", "evaluate", "guard_leaks", "load_pairs", "load_vectorizer", "main",
           "similarities", "table"]

DEFAULT_PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "semantic_pairs.jsonl"
THRESHOLDS = tuple(round(0.50 + 0.05 * i, 2) for i in range(10))  # 0.50 .. 0.95
_LABELS = {"hit", "miss"}


class Vectorizer(Protocol):
    def embed_many(self, texts: list[str], **kwargs: Any) -> list[list[float]]: ...


def load_pairs(path: str | Path = DEFAULT_PAIRS) -> list[dict]:
    """Read one labeled pair per line; blank lines are skipped, malformed lines raise ``ValueError``."""
    pairs = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not (isinstance(row.get("a"), str) and isinstance(row.get("b"), str)
                and row.get("label") in _LABELS):
            raise ValueError(f"{path}:{lineno}: need string 'a', 'b' and label 'hit' or 'miss'")
        pairs.append(row)
    return pairs


class _ProxyModel:
    """The proxy's own local model (``cache.embeddings``), as a vectorizer."""

    def __init__(self, int8: bool) -> None:
        from cache.embeddings import _load_model, local_model_path

        self._model = _load_model(local_model_path(), int8=int8)
        self.precision = self._model.precision

    def embed_many(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        size = int(kwargs.get("batch_size", 64))
        return [row.tolist() for i in range(0, len(texts), size) for row in self._model.encode(texts[i:i + size])]


def load_vectorizer(*, int8: bool = True) -> Vectorizer:
    """The local MiniLM exactly as the proxy runs it, loaded offline (a few seconds: call once)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    return _ProxyModel(int8)


def _unit(vec: Sequence[float]) -> list[float]:
    norm = sum(x * x for x in vec) ** 0.5 or 1.0
    return [x / norm for x in vec]


def similarities(pairs: list[dict], vectorizer: Vectorizer | None = None, *, int8: bool = True) -> list[float]:
    """Cosine similarity of each pair; every distinct text is embedded exactly once."""
    vectorizer = vectorizer or load_vectorizer(int8=int8)
    texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    vectors = vectorizer.embed_many(texts, batch_size=64)
    unit = {text: _unit(vec) for text, vec in zip(texts, vectors, strict=True)}
    return [sum(x * y for x, y in zip(unit[p["a"]], unit[p["b"]], strict=True)) for p in pairs]


def _served(pair: dict, sim: float, threshold: float, use_guard: bool) -> bool:
    # the proxy looks up the new question ("a") against a cached one ("b")
    return sim >= threshold and (not use_guard or semantic_guard(pair["a"], pair["b"]).allowed)


def evaluate(pairs: list[dict], sims: list[float], threshold: float, use_guard: bool) -> dict:
    """Precision, recall and counts at one threshold."""
    served = [_served(p, s, threshold, use_guard) for p, s in zip(pairs, sims, strict=True)]
    labeled_hits = sum(p["label"] == "hit" for p in pairs)
    true_hits = sum(ok and p["label"] == "hit" for p, ok in zip(pairs, served, strict=True))
    false_hits = sum(ok and p["label"] == "miss" for p, ok in zip(pairs, served, strict=True))
    n_served = true_hits + false_hits
    return {
        "threshold": threshold,
        "guard": use_guard,
        "precision": true_hits / n_served if n_served else 1.0,
        "recall": true_hits / labeled_hits if labeled_hits else 1.0,
        "served": n_served,
        "true_hits": true_hits,
        "false_hits": false_hits,
        "labeled_hits": labeled_hits,
        "labeled_misses": len(pairs) - labeled_hits,
    }


def table(pairs: list[dict], sims: list[float]) -> str:
    """Markdown table: similarity only vs similarity + guard at each threshold."""
    lines = [
        ("| threshold | sim-only precision | sim-only recall | sim-only true/false hits "
         "| +guard precision | +guard recall | +guard true/false hits |"),
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in THRESHOLDS:
        raw, guarded = evaluate(pairs, sims, t, False), evaluate(pairs, sims, t, True)
        lines.append(
            f"| {t:.2f} | {raw['precision']:.3f} | {raw['recall']:.3f} "
            f"| {raw['true_hits']}/{raw['false_hits']} "
            f"| {guarded['precision']:.3f} | {guarded['recall']:.3f} "
            f"| {guarded['true_hits']}/{guarded['false_hits']} |"
        )
    return "\n".join(lines)


def guard_leaks(pairs: list[dict], sims: list[float], threshold: float = 0.5) -> list[tuple[dict, float]]:
    """Labeled near-misses the guard lets through at ``threshold`` (what to look at when tuning)."""
    return [(p, s) for p, s in zip(pairs, sims, strict=True)
            if p["label"] == "miss" and _served(p, s, threshold, True)]


def _guard_refusals(pairs: list[dict], sims: list[float], threshold: float) -> list[tuple[dict, float, str]]:
    out = []
    for p, s in zip(pairs, sims, strict=True):
        if p["label"] == "hit" and s >= threshold:
            result = semantic_guard(p["a"], p["b"])
            if not result.allowed:
                out.append((p, s, result.reason))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS, help="JSONL file of labeled pairs")
    parser.add_argument("--json", type=Path, help="also write every threshold's metrics here")
    parser.add_argument("--threshold", type=float, default=0.5, help="threshold for the debug listings")
    parser.add_argument("--show-refused", action="store_true", help="also list paraphrases the guard refuses")
    parser.add_argument("--float32", action="store_true", help="the full-precision model (ORCACHE_EMBEDDINGS_INT8=0)")
    args = parser.parse_args(argv)

    pairs = load_pairs(args.pairs)
    vectorizer = load_vectorizer(int8=not args.float32)
    sims = similarities(pairs, vectorizer)
    hits = sum(p["label"] == "hit" for p in pairs)
    print(f"{len(pairs)} pairs: {hits} labeled hits, {len(pairs) - hits} labeled misses ({args.pairs}); "
          f"MiniLM {getattr(vectorizer, 'precision', '?')}\n")
    print(table(pairs, sims))

    leaks = guard_leaks(pairs, sims, args.threshold)
    print(f"\nNear-misses served with the guard at {args.threshold:.2f}: {len(leaks)}")
    for p, s in leaks:
        print(f"  sim={s:.3f} [{p.get('category', '?')}] {p['a']!r} ~ {p['b']!r}")
    if args.show_refused:
        refused = _guard_refusals(pairs, sims, args.threshold)
        print(f"\nParaphrases above {args.threshold:.2f} refused by the guard: {len(refused)}")
        for p, s, reason in refused:
            print(f"  sim={s:.3f} {reason:<18} {p['a']!r} ~ {p['b']!r}")

    if args.json:
        rows = [evaluate(pairs, sims, t, g) for t in THRESHOLDS for g in (False, True)]
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
