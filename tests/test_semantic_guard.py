"""The semantic guard refuses near-misses that the embedding similarity cannot tell apart, and lets
paraphrases through; on the shipped labeled pairs it makes the 0.5 default threshold safe."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from cache.guard import REASONS, GuardResult, guard_allows, semantic_guard
from scripts.eval_semantic import DEFAULT_PAIRS, THRESHOLDS, evaluate, load_pairs, similarities, table

PARAPHRASES = [
    ("What is the capital of France?", "what's the capital of france"),
    ("How do I reverse a list in Python?", "What's the best way to reverse a list in Python?"),
    ("Can you explain how compound interest works?", "Explain how compound interest works."),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
    ("How many teaspoons are in a tablespoon?", "How many tsp in a tbsp?"),
    ("What's 10 km in miles?", "How many miles is 10 kilometers?"),
    ("What are 3 tips for better sleep?", "Give me three tips for better sleep"),
    ("When did World War II end?", "When did WW2 end?"),
    ("What is ML?", "What is machine learning?"),
    ("how do i merge two dictionarys in pyhton", "How do I merge two dictionaries in Python?"),
    ("Is a tomato a fruit or a vegetable?", "Is a tomato a vegetable or a fruit?"),
    ("What's the time difference between Tokyo and London?", "Time difference between London and Tokyo?"),
    ("Do I need a visa to visit Japan as a US citizen?", "As a US citizen, do I need a visa to visit Japan?"),
    ("How do I not burn garlic?", "How can I avoid burning garlic?"),
    ("What is 7 times 8?", "What's 7 * 8?"),
    ("How many grams in 1 kg?", "How many grams are in a kilogram?"),
    ("Why is the ocean salty?", "What makes the ocean salty?"),
    ("Translate 'good morning' into Spanish.", "How do you say 'good morning' in Spanish?"),
]

NEAR_MISSES = [
    # (query, cached question, expected reason)
    ("What is the capital of France?", "What is the capital of Germany?", "entity_mismatch"),
    ("How do I fix 'KeyError: user_id'?", "How do I fix 'KeyError: account_id'?", "entity_mismatch"),
    ("Is https://github.com down?", "Is https://gitlab.com down?", "entity_mismatch"),
    ("Does he like me?", "Does she like me?", "entity_mismatch"),
    ("What is 15% of 80?", "What is 15% of 90?", "number_mismatch"),
    ("Convert 100 dollars to euros", "Convert 1,000 dollars to euros", "number_mismatch"),
    ("How many calories are in two eggs?", "How many calories are in 3 eggs?", "number_mismatch"),
    ("What does the Third Amendment say?", "What does the 5th Amendment say?", "number_mismatch"),
    ("Who was president in the nineties?", "Who was president in the eighties?", "number_mismatch"),
    ("How far is Paris from Lyon in km?", "How far is Paris from Lyon in miles?", "unit_mismatch"),
    ("Bake at 180 degrees Celsius for how long?", "Bake at 180°F for how long?", "unit_mismatch"),
    ("What is 100 USD in EUR?", "What is 100 USD in JPY?", "unit_mismatch"),
    ("Foods to eat when pregnant?", "Which foods should I avoid when pregnant?", "negation_mismatch"),
    ("How do I make bread with yeast?", "How do I make bread without yeast?", "negation_mismatch"),
    ("Is it safe to eat raw cookie dough?", "Is it unsafe to eat raw cookie dough?", "negation_mismatch"),
    ("Translate 'thank you' into French.", "Translate 'thank you' into Spanish.", "language_mismatch"),
    ("How do I reverse a list in Python?", "How do I reverse a list in JavaScript?", "language_mismatch"),
    ("How do I connect to MySQL in Java?", "How do I connect to MySQL in Go?", "language_mismatch"),
    ("Summarize the book 1984", "Critique the book 1984", "task_mismatch"),
    ("Explain the French Revolution.", "Write a poem about the French Revolution.", "task_mismatch"),
    ("Who invented the telephone?", "When was the telephone invented?", "task_mismatch"),
    ("Can I freeze cooked rice?", "How do I freeze cooked rice?", "task_mismatch"),
    ("Is coffee good for you?", "Why is coffee good for you?", "task_mismatch"),
    ("Is Canada bigger than the US?", "Is the United States bigger than Canada?", "order_mismatch"),
    ("Convert 30 degrees Celsius to Fahrenheit", "Convert 30 °F to Celsius", "order_mismatch"),
    ("Flights from London to New York", "Flights from New York to London", "order_mismatch"),
    ("Cheap flights to Paris", "Cheap flights from Paris", "order_mismatch"),
    ("Did Germany beat Brazil in 2014?", "Did Brazil beat Germany in 2014?", "order_mismatch"),
    ("What is the largest planet?", "What is the smallest planet?", "polarity_mismatch"),
    ("How do I make my sourdough less sour?", "How do I make my sourdough more sour?", "polarity_mismatch"),
    ("How do I add a column in PostgreSQL?", "How do I drop a column in PostgreSQL?", "polarity_mismatch"),
    ("What is 2+2?", "What is 2*2?", "content_mismatch"),
    ("Can dogs eat grapes?", "Can cats eat grapes?", "content_mismatch"),
    ("What should I wear to a summer wedding?", "What to wear to a winter wedding?", "content_mismatch"),
    ("Who are you?", "Who am I?", "content_mismatch"),
]


@pytest.mark.parametrize(("query", "candidate"), PARAPHRASES)
def test_guard_allows_paraphrases(query: str, candidate: str) -> None:
    result = semantic_guard(query, candidate)
    assert result == GuardResult(True, "ok"), result
    assert semantic_guard(candidate, query).allowed  # a paraphrase is a paraphrase both ways


@pytest.mark.parametrize(("query", "candidate", "reason"), NEAR_MISSES)
def test_guard_refuses_near_misses_with_the_changed_slot(query: str, candidate: str, reason: str) -> None:
    result = semantic_guard(query, candidate)
    assert not result.allowed
    assert result.reason == reason, result
    assert not guard_allows(candidate, query)


def test_identical_questions_pass_whatever_the_case_and_punctuation() -> None:
    assert guard_allows("WHAT IS THE SPEED OF LIGHT", "what is the speed of light?!")


def test_guard_is_deterministic_and_reasons_are_documented() -> None:
    from cache import guard

    first = [semantic_guard(q, c) for q, c, _ in NEAR_MISSES]
    guard._profile.cache_clear()
    assert [semantic_guard(q, c) for q, c, _ in NEAR_MISSES] == first
    assert {r.reason for r in first} <= set(REASONS)


def test_guard_is_cheap_enough_for_the_request_path() -> None:
    from cache import guard

    pairs = [(q, c) for q, c in PARAPHRASES] + [(q, c) for q, c, _ in NEAR_MISSES]
    best = float("inf")
    for _ in range(5):  # best of five: other processes share these cores
        guard._profile.cache_clear()
        start = time.perf_counter()
        for q, c in pairs:
            semantic_guard(q, c)
        best = min(best, (time.perf_counter() - start) / len(pairs))
    # nothing memoised; ~0.2 ms on a slow shared core, far less on ordinary hardware
    assert best < 1e-3


# ----------------------------------------------------------------------------------------------------------
# The shipped labeled data set, embedded with the real local MiniLM model.

@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return load_pairs(DEFAULT_PAIRS)


@pytest.fixture(scope="module")
def sims(pairs: list[dict]) -> list[float]:
    return similarities(pairs)  # loads the model once for this module


def test_data_set_covers_every_category(pairs: list[dict]) -> None:
    labels = Counter(p["label"] for p in pairs)
    assert len(pairs) >= 160 and labels["hit"] >= 70 and labels["miss"] >= 80
    miss_categories = {p["category"] for p in pairs if p["label"] == "miss"}
    assert miss_categories >= {"entity", "number", "negation", "language_task", "unit", "reversed", "other"}
    assert {p["category"] for p in pairs if p["label"] == "hit"} == {"paraphrase"}


def test_guard_makes_the_default_threshold_safe(pairs: list[dict], sims: list[float]) -> None:
    guarded = evaluate(pairs, sims, 0.5, use_guard=True)
    raw = evaluate(pairs, sims, 0.5, use_guard=False)
    assert guarded["precision"] >= 0.98, guarded
    assert guarded["recall"] >= 0.6, guarded
    # similarity alone serves most near-misses at 0.5: the guard is what makes the default safe
    assert raw["precision"] <= 0.7, raw
    assert raw["false_hits"] >= 5 * max(guarded["false_hits"], 1), (raw, guarded)


def test_evaluation_table_has_a_row_per_threshold(pairs: list[dict], sims: list[float]) -> None:
    rendered = table(pairs, sims)
    assert len(rendered.splitlines()) == 2 + len(THRESHOLDS)
    assert rendered.splitlines()[2].startswith("| 0.50 |")


def test_precision_is_one_when_nothing_is_served() -> None:
    pairs = [{"a": "x", "b": "y", "label": "miss"}, {"a": "p", "b": "q", "label": "hit"}]
    result = evaluate(pairs, [0.1, 0.2], 0.5, use_guard=False)
    assert result["precision"] == 1.0 and result["recall"] == 0.0 and result["served"] == 0
