"""Second-stage check for semantic cache hits: may a cached answer to ``candidate`` serve ``query``?

The vector search says two questions are *about* the same thing; it cannot tell "capital of France" from
"capital of Germany" (MiniLM: 0.66). This guard reads both texts as a set of slots and refuses a hit when
any slot differs: numbers, units, quoted strings / identifiers / URLs, negation, target language, task,
question type, polarity (largest vs smallest), the order of a relation (A than B vs B than A), and finally
any content word that only one text has and that no synonym, typo or acronym explains. A paraphrase may
reword a question; it may not change what is asked.

Pure Python, deterministic, no model: the per-text analysis is a few precompiled regex passes (tens of
microseconds for a chat question) and is memoised for repeated candidates.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations, pairwise

__all__ = ["REASONS", "GuardResult", "guard_allows", "semantic_guard"]

REASONS = (
    "ok",
    "entity_mismatch",  # proper nouns, quoted strings, code identifiers, URLs
    "number_mismatch",  # numbers, ordinals, decades, number words
    "unit_mismatch",  # km vs miles, Celsius vs Fahrenheit, USD vs EUR
    "negation_mismatch",  # not / never / without / un- on one side only
    "language_mismatch",  # French vs Spanish, Python vs JavaScript
    "task_mismatch",  # summarize vs translate, who vs when, yes/no vs how
    "polarity_mismatch",  # largest vs smallest, add vs remove
    "order_mismatch",  # A bigger than B vs B bigger than A, to X vs from X
    "content_mismatch",  # a content word only one side has
)


@dataclass(frozen=True, slots=True)
class GuardResult:
    allowed: bool
    reason: str
    detail: str = ""


def guard_allows(query: str, candidate: str) -> bool:
    return semantic_guard(query, candidate).allowed


def semantic_guard(query: str, candidate: str) -> GuardResult:
    """Decide whether the answer cached for ``candidate`` is a correct answer to ``query``."""
    a, b = _profile(query), _profile(candidate)
    if a.flat == b.flat:
        return _OK
    for check in _CHECKS:
        refused = check(a, b)
        if refused is not None:
            return refused
    return _OK


# --------------------------------------------------------------------------------------------------
# Lexicon. Rules about English, not about particular questions.

def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _ranked(text: str, start: int = 0) -> dict[str, int]:
    return {w: i for i, w in enumerate(text.split(), start)}


_STOPWORDS = _words("""
    a an the and or but if then so of in on at by for with about as into onto to from than via per each every
    between is are was were be been being am do does did done doing have has had having can could should
    would will shall may might must i me my mine myself you your yours u ur we our ours it its they them their
    he him his
    she her this that these those there here what which who whom whose when where why how whats hows whos
    wheres some any all also just really actually basically exactly simply very too much many s t d ll re ve m
    o like get got gets getting use using used thing things way ways please pls plz thanks thank hi hello hey
    ok okay alright possible allowed explain explanation describe tell show give share provide recommend
    suggest help know let want wonder wondering curious question someone somebody person anyone world located
    situated go going goes mean meaning means definition define
    """) | {"us"}  # lower-case "us" is the pronoun; "US" is rewritten to USA before tokenising

# Articles and possessives carry no slot; everything else between two key words is a relation connector.
_DETERMINERS = _words("a an the my your its their our his her some any this that these those")
_SYMMETRIC_CONNECTORS = _words("and or vs versus between with plus also both either")
_DIRECTION = {"to": "to", "into": "to", "toward": "to", "towards": "to", "from": "from"}

_NEGATIONS = _words("""
    not no never none nobody nothing nowhere neither nor without cannot cant dont doesnt didnt isnt arent
    wasnt werent wont shouldnt wouldnt couldnt hasnt havent hadnt mustnt avoid avoiding avoided prevent
    preventing prevented
    """)
_NEG_PREFIXES = ("un", "dis", "non", "in", "im", "ir", "il", "de", "mis", "anti")

# Who a third-person pronoun points at is a slot: "does he like me" is not "does she like me".
_REFERENTS = {w: group.split()[0] for group in ("he him his himself", "she her hers herself",
                                               "they them their theirs themselves") for w in group.split()}

_AUX = _words("is are was were am can could should would will do does did has have had may might must shall")

_WH = {"why": "why", "who": "person", "whom": "person", "whose": "person", "when": "time", "where": "place",
       "what": "neutral", "which": "neutral", "whats": "neutral", "wheres": "place", "whos": "person"}
_HOW = {"many": "quantity", "much": "quantity", "long": "duration", "far": "distance", "old": "age",
        "often": "frequency", "big": "size", "large": "size", "tall": "size", "high": "size", "deep": "size",
        "heavy": "size", "fast": "speed"}

_UNITS: dict[str, str] = {}
for _name, _aliases in {
    "mm": "mm millimeter millimetre", "cm": "cm centimeter centimetre", "m": "meter metre",
    "km": "km kilometer kilometre kms", "mi": "mi mile", "ft": "ft foot feet", "inch": "inch inches",
    "yd": "yd yard", "mg": "mg milligram", "g": "gram gm", "kg": "kg kilogram kilo", "lb": "lb lbs pound",
    "oz": "oz ounce", "ton": "ton tonne", "ml": "ml milliliter millilitre", "l": "liter litre",
    "cup": "cup", "tbsp": "tbsp tbs tablespoon", "tsp": "tsp teaspoon", "qt": "qt quart", "pt": "pint",
    "gal": "gal gallon", "c": "celsius centigrade °c", "f": "fahrenheit °f", "kelvin": "kelvin",
    "deg": "degree", "rad": "radian", "sec": "second sec secs", "min": "minute min mins",
    "hr": "hour hr hrs", "day": "day", "week": "week wk", "month": "month", "year": "year yr yrs",
    "decade": "decade", "century": "century centuries", "bit": "bit", "byte": "byte", "kb": "kb kilobyte",
    "mb": "mb megabyte", "gb": "gb gigabyte", "tb": "tb terabyte", "mph": "mph", "kph": "kph kmh",
    "kcal": "calorie kcal cal", "kwh": "kwh", "joule": "joule", "watt": "watt", "percent": "percent pct %",
    "usd": "usd dollar buck $", "eur": "eur euro €", "gbp": "gbp sterling quid £", "jpy": "jpy yen ¥",
    "cny": "cny yuan rmb renminbi", "inr": "inr rupee", "mxn": "mxn peso", "chf": "chf franc",
    "btc": "btc bitcoin", "cent": "cent penny pennies",
}.items():
    for _alias in _aliases.split():
        _UNITS[_alias] = _name
# single letters are units only right after a number ("400F", "5 g"), never on their own
_SHORT_UNITS = {"c": "c", "f": "f", "g": "g", "l": "l", "m": "m", "h": "hr", "s": "sec", "k": "thousand"}
_TEMPERATURES = frozenset({"c", "f", "kelvin"})
_ACRONYM_LIKE_UNITS = _words("ml mi pt tb mm cm min sec cal gal yd qt mg")

_NUMBER_WORDS = _ranked("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                        "fourteen fifteen sixteen seventeen eighteen nineteen")
_TENS = _ranked("twenty thirty forty fifty sixty seventy eighty ninety", 2)
_NUMBER_WORDS.update({w: 10 * i for w, i in _TENS.items()})
_NUMBER_WORDS["dozen"] = 12
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_ORDINAL_WORDS = _ranked("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
                         "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth "
                         "twentieth", 1)
_ORDINAL_WORDS.update({"thirtieth": 30, "fortieth": 40, "fiftieth": 50, "hundredth": 100, "thousandth": 1000})
_DECADE_WORDS = {w: f"{10 * i}s" for w, i in
                 _ranked("twenties thirties forties fifties sixties seventies eighties nineties", 2).items()}

_NATURAL_LANGUAGES = _words("""
    english french spanish german italian portuguese japanese chinese mandarin cantonese korean russian arabic
    hindi bengali urdu dutch swedish norwegian danish finnish polish turkish greek hebrew latin vietnamese
    thai indonesian malay ukrainian czech hungarian romanian persian farsi swahili tagalog filipino catalan
    welsh esperanto punjabi tamil telugu gaelic icelandic
    """)
_CODE_LANGUAGES = {w: w for w in _words("""
    python javascript typescript java kotlin scala swift ruby php perl rust golang haskell elixir erlang
    clojure lua julia dart matlab fortran cobol bash powershell zsh sql html css sass solidity zig ocaml lisp
    groovy vba c++ c# f# objective-c
    """)}
_CODE_LANGUAGES.update({"js": "javascript", "ts": "typescript", "py": "python", "golang": "go", "cpp": "c++",
                        "csharp": "c#", "node": "javascript", "nodejs": "javascript", "shell": "bash"})
# ambiguous with ordinary words: languages only when capitalised mid-sentence
_CASED_CODE_LANGUAGES = {"Go": "go", "C": "c", "R": "r", "D": "d"}

_TASKS: dict[str, str] = {}
for _name, _aliases in {
    "translate": "translate translates translated translating translation translator",
    "summarize": "summarize summarise summarized summarised summary summaries summarization summarisation "
                 "tldr recap synopsis",
    "write": "write compose draft",
    "fix": "fix fixes fixing debug debugging repair troubleshoot solve resolve",
    "review": "review critique proofread evaluate assess grade feedback",
    "analyze": "analyze analyse analysis",
    "rewrite": "rewrite rephrase paraphrase reword",
    "optimize": "optimize optimise optimization optimisation",
    "refactor": "refactor refactoring",
}.items():
    for _alias in _aliases.split():
        _TASKS[_alias] = _name

# Irregular forms the suffix stripper cannot reach.
_IRREGULAR = {"wrote": "author", "written": "author", "writer": "author", "author": "author",
              "children": "child", "men": "man", "women": "woman", "mice": "mouse", "teeth": "tooth",
              "saw": "see", "seen": "see", "ran": "run", "ate": "eat", "eaten": "eat", "fell": "fall",
              "fallen": "fall", "began": "begin", "begun": "begin", "made": "make", "took": "take",
              "bought": "buy", "sold": "sell", "lost": "lose", "won": "win", "best": "best", "worst": "worst",
              "better": "better", "worse": "worse", "was": "was", "has": "has", "does": "does",
              "less": "less",
              "is": "is", "this": "this", "its": "its", "his": "his", "pros": "pro", "cons": "con",
              "news": "news", "series": "series", "species": "species", "gas": "gas", "bus": "bus"}

# Words that name the same slot. Written as plain words; stemmed when the module loads.
_SYNONYM_GROUPS = (
    "symptom sign", "tallest highest", "tall high", "big large huge", "biggest largest",
    "small little tiny", "smallest tiniest", "exit quit", "remove delete erase eliminate",
    "calculate compute find determine", "see check view visible", "directory folder dir",
    "dictionary dict", "postgres postgresql psql",
    "difference different differ differentiate distinguish vs versus compare comparison contrast",
    "speed velocity", "buy purchase", "begin start",
    "store keep preserve", "learn study", "kid child", "photo picture image", "film movie",
    "cheap inexpensive affordable", "fastest quickest", "car automobile", "doctor physician", "author writer",
)

# Opposite slots: a hit across these would answer the opposite question.
_ANTONYMS = (
    "big small", "large small", "biggest smallest", "largest smallest", "tall short", "tallest shortest",
    "high low", "highest lowest", "long short", "longest shortest", "hot cold", "hottest coldest",
    "warm cool", "warmest coolest", "fast slow", "fastest slowest", "early late", "earliest latest",
    "old young", "old new", "oldest youngest", "oldest newest", "cheap expensive", "cheapest expensive",
    "heavy light", "heaviest lightest", "rich poor", "richest poorest", "strong weak", "strongest weakest",
    "deep shallow", "deepest shallowest", "wide narrow", "thick thin", "easy hard", "easy difficult",
    "easiest hardest", "more less", "more fewer", "most least", "best worst", "good bad", "better worse",
    "increase decrease", "increase reduce", "increase lower", "raise lower", "gain lose", "gain loss",
    "win lose", "buy sell", "add remove", "add delete", "add drop", "start stop", "start end", "begin end",
    "open close", "enable disable", "allow block", "allow deny", "accept reject", "push pull",
    "import export", "upload download", "encrypt decrypt", "encode decode", "compress decompress",
    "serialize deserialize", "input output", "ascending descending", "before after", "above below",
    "over under", "inside outside", "min max", "minimum maximum", "positive negative", "true false",
    "north south", "east west", "left right", "pro con", "advantage drawback", "benefit drawback",
    "benefit risk", "safe dangerous", "wet dry", "full empty", "light dark", "clean dirty", "love hate",
    "sweet sour", "sweet salty", "past future", "first last", "on off", "healthy unhealthy",
    "synonym antonym", "overhydration dehydration",
)

# Whole-phrase paraphrases, applied before tokenising; each maps a common English construction onto one form.
# The literal triggers let a question skip every pattern it cannot match (substring tests cost nanoseconds).
_PHRASES: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = tuple(
    (tuple(triggers.split("|")), re.compile(pattern, re.IGNORECASE), repl) for triggers, pattern, repl in (
        ("you|u ", r"(^|[.?!,;:]\s*)(?:please\s+)?(?:can|could|would|will)\s+(?:you|u)\s+(?:please\s+)?",
         r"\1"),
        ("know|wonder", (r"\b(?:i\s+(?:want|need|would\s+like|'d\s+like)\s+to\s+know|i\s+was\s+wondering|"
                         r"i\s+wonder|do\s+you\s+know)\b"), ""),
        ("make|come|reason", r"\bwhat\s+makes\b|\bhow\s+come\b|\bwhat(?:\s+is|'s)\s+the\s+reason\b", "why"),
        ("year", r"\b(?:in\s+|during\s+)?(?:what|which)\s+year\b", "when"),
        ("people", r"\bhow\s+many\s+people\s+live\s+in\b", "what is the population of"),
        ("stand|short|acronym|abbreviation",
         r"\b(?:stands?|short)\s+for\b|\b(?:an?\s+)?(?:acronym|abbreviation)\s+(?:for|of)\b", "standfor"),
        ("down", r"\b(?:come|came|comes|coming)\s+down\b", "fall"),
        ("way|method|approach",
         (r"\b(?:the\s+|a\s+)?(?:best|good|right|proper|correct|recommended|ideal|optimal|"
          r"most\s+effective)\s+(?:way|method|approach)s?\s+(?:to|of)\b"), "how to"),
        ("way", r"\bwhat(?:\s+is|'s|s)\s+the\s+way\s+to\b", "how to"),
        ("rid", r"\bget(?:ting)?\s+rid\s+of\b", "remove"),
        ("sum", r"\bsum\s+up\b", "summarize"),
        ("united|u.s.", r"\bunited\s+states(?:\s+of\s+america)?\b|\bu\.s\.(?:a\.)?", "USA"),
        ("kingdom|britain", r"\bunited\s+kingdom\b|\bgreat\s+britain\b", "UK"),
        ("as well", r"\bas\s+well\s+as\b", "and"),
        ("away", r"\bfar\s+away\b", "far"),
        ("order", r"\bin\s+order\s+to\b", "to"),
        # "the boiling point of X" is by definition "the temperature at which X boils"
        ("temperature", (r"\b(?:at\s+)?what\s+temperature\s+((?:in\s+\w+\s+)?)(?:does|do|did|will)\s+(.+?)\s+"
                         r"(boil|freez|melt)e?s?\b"), r"what is the \3ing point \1of \2"),
    ))
_TRIGGER = re.compile("|".join(sorted({re.escape(t) for ts, _, _ in _PHRASES for t in ts},
                                      key=len, reverse=True)))
_US = re.compile(r"\bUS\b")  # case-sensitive: "us" the pronoun must survive
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})

_URL = re.compile(r"\bhttps?://[^\s<>\"'`]+|\bwww\.[^\s<>\"'`]+", re.IGNORECASE)
_QUOTED = re.compile(r"`([^`\n]+)`|\"([^\"\n]+)\"|(?<![\w'])'((?:[^'\n]|'(?=[A-Za-z]))+?)'(?![A-Za-z0-9])")
_IDENTIFIER = re.compile(
    r"\b[A-Za-z]+_\w+\b"  # snake_case (camelCase stays one word and is compared as content)
    r"|\b[A-Za-z_]\w+(?:\.[A-Za-z_]\w+)+\b"  # dotted.names, domains
    r"|\b\w+\(\)"
)
_TOKEN = re.compile(  # words first: they are most tokens
    r"(?P<word>[A-Za-z]+(?:\+\+|#|'[A-Za-z]+)?)"
    r"|(?P<cur>[$€£¥])?\s?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)*)"
    r"(?:'?s\b(?P<dec>)|(?P<suf>[A-Za-z%°]+))?"
    r"|(?P<temp>°\s?[CcFf])\b"
    r"|(?P<sym>[%$€£¥])"
    r"|(?P<op>[+*/^=<>×÷]|(?<=\d)\s*-(?=\s*\d))"
)
_OPERATORS = {"+": "plus", "*": "times", "×": "times", "/": "divided", "÷": "divided", "^": "power",
              "=": "equals", "<": "less", ">": "greater", "-": "minus"}
_ROMAN = re.compile(r"^(?=[IVX]{2,5}$)X{0,3}(?:IX|IV|V?I{0,3})$")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10}
_WORD = re.compile(r"[A-Za-z]+")
_FLAT = re.compile(r"[^a-z0-9+#%$€£¥°]+")
_VOWELS = frozenset("aeiouy")


def _stem(word: str) -> str:
    """A deliberately light suffix stripper: both sides go through it, so consistency matters, not
    linguistics."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "i"
    elif word.endswith(("sses", "shes", "ches", "xes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix, keep in (("ing", 3), ("ed", 3), ("er", 4), ("ly", 4)):
        if word.endswith(suffix) and len(word) - len(suffix) >= keep:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # running -> run, bigger -> big
            break
    if word.endswith("tion") and len(word) > 6:
        word = word[:-3]  # translation -> translat(e)
    if word[-1] in "ey" and len(word) > 3:
        word = word[:-1] + ("i" if word[-1] == "y" else "")
    return word


def _roman(numeral: str) -> int:
    values = [_ROMAN_VALUES[c] for c in numeral]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


def _build_synonyms() -> dict[str, str]:
    table: dict[str, str] = {}
    for group in _SYNONYM_GROUPS:
        words = group.split()
        canon = _stem(words[0])
        for w in words:
            table[_stem(w)] = canon
    return table


_SYNONYMS = _build_synonyms()


@lru_cache(maxsize=4096)
def _canon(word: str) -> str:
    stem = _stem(word)
    return _SYNONYMS.get(stem, stem)


_ANTONYM_PAIRS = frozenset(
    frozenset((_canon(x), _canon(y)))
    for x, y in (pair.split() for pair in _ANTONYMS) if _canon(x) != _canon(y)
)
_ANTONYM_INDEX: dict[str, frozenset[str]] = {}
for _pair in _ANTONYM_PAIRS:
    for _w in _pair:
        _ANTONYM_INDEX[_w] = _ANTONYM_INDEX.get(_w, frozenset()) | (_pair - {_w})
_STOP_STEMS = frozenset(_stem(w) for w in _STOPWORDS) | _STOPWORDS


# --------------------------------------------------------------------------------------------------
# Per-text analysis

@dataclass(frozen=True, slots=True)
class _Profile:
    flat: str
    urls: frozenset[str]
    quoted: tuple[str, ...]
    identifiers: tuple[str, ...]
    numbers: tuple[str, ...]
    units: frozenset[str]
    negations: int
    languages: frozenset[str]
    code_languages: frozenset[str]
    tasks: frozenset[str]
    qtypes: frozenset[str]
    referents: frozenset[str]
    raw: frozenset[str]  # every word's stem, before stopwords go (polarity and un- checks)
    content: tuple[tuple[str, str, bool], ...]  # (canonical stem, surface word, looks like a name) in order
    seq: tuple[tuple[bool, str], ...]  # (is_key, value) in order, for relation order
    words: tuple[str, ...]  # every lower-cased word in order, for acronym expansion
    content_set: frozenset[str]
    keys: tuple[str, ...]  # the key values of seq, in order
    adjacent: frozenset[tuple[str, str]]  # key pairs with nothing between them
    directions: dict[str, str]  # key -> "to" / "from" when a direction word precedes it
    article: bool  # has "a" / "an", which can stand for "one" ("a week", "1 week")


def _flatten(text: str) -> str:
    return " " + _FLAT.sub(" ", text.lower()).strip() + " "


# word kinds, decided once per distinct lower-case word (memoised): the token loop only dispatches
_NUMWORD, _SCALE, _ORDINAL, _DECADE, _NEGATION, _WHWORD, _HOWWORD, _UNIT, _NATURAL, _CODE, _TASK, _STOP, \
    _CONTENT = range(13)


@lru_cache(maxsize=8192)
def _classify(word: str) -> tuple[int, str | int, str]:
    """(kind, value, raw stem) of a lower-case word, before any context is applied."""
    stem = _stem(word)
    raw = _SYNONYMS.get(stem, stem)
    if word in _NUMBER_WORDS:
        return _NUMWORD, _NUMBER_WORDS[word], raw
    if word in _SCALES:
        return _SCALE, _SCALES[word], raw
    if word in _ORDINAL_WORDS:
        return _ORDINAL, f"#{_ORDINAL_WORDS[word]}", raw
    if word in _DECADE_WORDS:
        return _DECADE, _DECADE_WORDS[word], raw
    if word in _NEGATIONS:
        return _NEGATION, "not", raw
    if word in _WH:
        return _WHWORD, _WH[word], raw
    if word == "how":
        return _HOWWORD, "manner", raw
    unit = _UNITS.get(word) or (_UNITS.get(word[:-1]) if word.endswith("s") else None) \
        or (_UNITS.get(word[:-2]) if word.endswith("es") else None)
    if unit:
        return _UNIT, unit, raw
    if word in _NATURAL_LANGUAGES:
        return _NATURAL, word, raw
    if word in _CODE_LANGUAGES:
        return _CODE, _CODE_LANGUAGES[word], raw
    if word in _TASKS:
        return _TASK, _TASKS[word], raw
    if word in _STOPWORDS or stem in _STOP_STEMS:
        return _STOP, _DIRECTION.get(word, word), raw
    return _CONTENT, raw, raw


def _compose(values: list[int]) -> int:
    """twenty five -> 25, two hundred -> 200, three thousand five hundred -> 3500."""
    total, current = 0, 0
    for value in values:
        if value >= 100:
            current = max(current, 1) * value
            if value >= 1000:
                total, current = total + current, 0
        else:
            current += value
    return total + current


_CLAUSE_PUNCT = frozenset(".?!,;:-(\"'")


@lru_cache(maxsize=1024)
def _profile(text: str) -> _Profile:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = text.strip()
    flat = _flatten(text)

    urls: frozenset[str] = frozenset()
    if "://" in text or "www." in text:
        urls = frozenset(u.rstrip(".,;:!?)").lower().removeprefix("https://").removeprefix("http://")
                         .removeprefix("www.").rstrip("/") for u in _URL.findall(text))
        text = _URL.sub(" ", text)
    quoted: tuple[str, ...] = ()
    if "'" in text or '"' in text or "`" in text:
        quoted = tuple(q for q in (_flatten(next(g for g in m.groups() if g)) for m in _QUOTED.finditer(text))
                       if q.strip())
        if quoted:
            text = _QUOTED.sub(lambda m: " " + next(g for g in m.groups() if g) + " ", text)
    identifiers = tuple(_flatten(i) for i in _IDENTIFIER.findall(text)) if ("_" in text or "." in text
                                                                            or "()" in text) else ()
    present = set(_TRIGGER.findall(text.lower()))
    if present:
        for triggers, pattern, repl in _PHRASES:
            if not present.isdisjoint(triggers):
                text = pattern.sub(repl, text)
    if "US" in text:
        text = _US.sub("USA", text)
    shouting = text.isupper()

    numbers: list[str] = []
    units: set[str] = set()
    languages: set[str] = set()
    code_languages: set[str] = set()
    tasks: set[str] = set()
    qtypes: set[str] = set()
    referents: set[str] = set()
    raw: set[str] = set()
    content: list[tuple[str, str, bool]] = []
    seq: list[tuple[bool, str]] = []
    pending: list[int] = []  # number words being composed ("twenty five", "two hundred")
    weak_ones = negations = 0
    prev_number = says = False
    prev_word = ""
    prev_end = 0

    for m in _TOKEN.finditer(text):
        surface, cur, num, dec, suffix, temp, sym, op = m.groups()
        start, end = m.span()
        gap_start, prev_end = prev_end, end

        if surface is not None:
            word = surface.lower()
            if "'" in word:
                base, _, tail = word.partition("'")
                if tail == "t":  # n't
                    negations += 1
                    base = base[:-1]
                    word = {"won": "will", "ca": "can", "sha": "shall"}.get(base, base)
                else:
                    word = base
                if not word:
                    continue
            kind, value, stem = _classify(word)
            if kind is _NUMWORD or (kind is _SCALE and (pending or prev_number)):
                if kind is _SCALE and not pending and numbers and numbers[-1].isdigit():
                    numbers[-1] = str(int(numbers[-1]) * value)  # "5 million"
                    seq[-1] = (True, numbers[-1])
                else:
                    pending.append(value)
                prev_number = True
                continue
        else:
            word, kind, value, stem = "", -1, "", ""

        was_number = prev_number or bool(pending)
        if pending:
            n = _compose(pending)
            if n == 1 and len(pending) == 1:
                weak_ones += 1  # "one" is as often a pronoun or "a" as it is a quantity
            else:
                numbers.append(str(n))
                seq.append((True, str(n)))
            pending.clear()
        prev_number = False

        if num is not None:
            value = num.replace(",", "")
            suffix = (suffix or "").lower()
            if dec is not None and value.endswith("0"):
                value += "s"  # 90s, 1990s; "carbon-14's" is a possessive
            elif suffix in ("st", "nd", "rd", "th"):
                value, suffix = "#" + value, ""
            elif suffix == "k" and value.isdigit():
                value, suffix = str(int(value) * 1000), ""
            numbers.append(value)
            seq.append((True, value))
            if cur:
                units.add(_UNITS[cur])
            if suffix:
                unit = _UNITS.get(suffix) or _UNITS.get(suffix.rstrip("s")) or _SHORT_UNITS.get(suffix)
                if unit:
                    units.add(unit)
                    seq.append((True, unit))
                else:
                    content.append((suffix, suffix, False))
            prev_number, prev_word = True, ""
            continue
        if temp:
            unit = _UNITS["°" + temp[-1].lower()]
            units.add(unit)
            seq.append((True, unit))
            continue
        if sym:
            units.add(_UNITS[sym])
            continue
        if op:
            op = _canon(_OPERATORS[op.strip()])  # "2 + 2" and "2 plus 2" are one question
            content.append((op, op, False))
            seq.append((True, op))
            continue

        # only capitalised words and auxiliaries care whether they open a clause
        clause_start = (surface[0].isupper() or word in _AUX) and (
            gap_start == 0 or not _CLAUSE_PUNCT.isdisjoint(text[gap_start:start]))
        if not shouting and surface.isupper() and _ROMAN.match(surface):
            numbers.append(str(_roman(surface)))
            seq.append((True, numbers[-1]))
            continue
        if kind is _ORDINAL and not (word == "second" and (was_number or prev_word in ("a", "per", "each"))):
            numbers.append(value)
            seq.append((True, value))
            prev_word = word
            continue
        if kind is _DECADE:
            numbers.append(value)
            seq.append((True, value))
            continue
        if surface in _CASED_CODE_LANGUAGES and not clause_start and not shouting and not was_number \
                and prev_word not in ("degree", "degrees"):
            code_languages.add(_CASED_CODE_LANGUAGES[surface])
            seq.append((True, _CASED_CODE_LANGUAGES[surface]))
            continue
        if kind is _NEGATION:
            negations += 1
            seq.append((False, "not"))
            prev_word = word
            continue
        if kind is _WHWORD or kind is _HOWWORD:
            qtypes.add(value)
            prev_word = word
            continue
        if prev_word == "how" and word in _HOW:
            qtypes.discard("manner")
            qtypes.add(_HOW[word])
            prev_word = word
            continue
        if clause_start and word in _AUX:
            qtypes.add("yesno")
        if was_number and word in _SHORT_UNITS and word not in ("k", "s", "m"):
            units.add(_SHORT_UNITS[word])
            seq.append((True, _SHORT_UNITS[word]))
            continue
        if prev_word in ("degree", "degrees") and word in ("c", "f"):
            units.add(word)
            seq.append((True, word))
            continue
        if kind is _UNIT and not was_number and (word in ("second", "min") or (
                word in _ACRONYM_LIKE_UNITS and surface.isupper() and not shouting)):
            kind, value = _CONTENT, stem  # "a second opinion", "ML" (machine learning), "TB" (tuberculosis)
        if kind is _UNIT:
            units.add(value)
            seq.append((True, value))
            prev_word = word
            continue
        if kind is _NATURAL or kind is _CODE or kind is _TASK:
            (languages if kind is _NATURAL else code_languages if kind is _CODE else tasks).add(value)
            seq.append((True, value))
            prev_word = word
            continue
        if word in ("say", "said", "says"):
            says = True
        elif word in _REFERENTS:
            referents.add(_REFERENTS[word])
        raw.add(stem)
        if surface == "May" and not clause_start:
            kind, value = _CONTENT, "may_month"  # the month, not the modal verb
        if kind is _STOP:
            if word not in _DETERMINERS:
                seq.append((False, value))
            prev_word = word
            continue
        named = not shouting and ((surface[0].isupper() and not clause_start)
                                  or (len(surface) > 1 and surface.isupper()))
        content.append((value, word, named))
        seq.append((True, value))
        prev_word = word
    if pending:
        n = _compose(pending)
        if n == 1 and len(pending) == 1:
            weak_ones += 1
        else:
            numbers.append(str(n))

    if numbers and weak_ones:
        numbers.append("1")  # "one week" vs "a week": only counts when other numbers are in play
    if units & _TEMPERATURES:
        units.discard("deg")
    if languages and (says or quoted):
        tasks.add("translate")  # "how do you say 'x' in French" is a translation request
        content = [c for c in content if c[1] not in ("say", "said", "says")]
    words = tuple(_WORD.findall(text.lower()))
    adjacent = frozenset((x[1], y[1]) for x, y in pairwise(seq) if x[0] and y[0])
    directions = {item[1]: prev[1] for prev, item in pairwise(seq)
                  if item[0] and not prev[0] and prev[1] in ("to", "from")}
    return _Profile(
        flat=flat, urls=urls, quoted=quoted, identifiers=identifiers, numbers=tuple(sorted(numbers)),
        units=frozenset(units), negations=negations, languages=frozenset(languages),
        code_languages=frozenset(code_languages), tasks=frozenset(tasks), qtypes=frozenset(qtypes),
        referents=frozenset(referents), raw=frozenset(raw), content=tuple(content), seq=tuple(seq),
        words=words, content_set=frozenset(c for c, _, _ in content),
        keys=tuple(v for k, v in seq if k), adjacent=adjacent, directions=directions,
        article="a" in words or "an" in words,
    )


# --------------------------------------------------------------------------------------------------
# Checks, cheapest and most specific first. Each returns None (no objection) or a refusal.

_OK = GuardResult(True, "ok")


def _refuse(reason: str, detail: str) -> GuardResult:
    return GuardResult(False, reason, detail)


def _check_literals(a: _Profile, b: _Profile) -> GuardResult | None:
    if a.urls != b.urls:
        return _refuse("entity_mismatch", f"urls {sorted(a.urls ^ b.urls)}")
    for mine, other in ((a, b), (b, a)):
        for literal in mine.quoted + mine.identifiers:
            if literal not in other.flat:
                return _refuse("entity_mismatch", f"literal {literal.strip()!r} only on one side")
    return None


def _check_numbers(a: _Profile, b: _Profile) -> GuardResult | None:
    na, nb = a.numbers, b.numbers
    if na == nb:
        return None
    if ("1" in na) != ("1" in nb) and (b if "1" in na else a).article:
        # "1 kg" / "one week" on one side, "a kilogram" / "a week" on the other
        na, nb = tuple(n for n in na if n != "1"), tuple(n for n in nb if n != "1")
    if na != nb:
        return _refuse("number_mismatch", f"{list(na)} vs {list(nb)}")
    return None


def _check_units(a: _Profile, b: _Profile) -> GuardResult | None:
    if a.units != b.units:
        return _refuse("unit_mismatch", f"{sorted(a.units)} vs {sorted(b.units)}")
    return None


def _check_negation(a: _Profile, b: _Profile) -> GuardResult | None:
    if a.negations != b.negations:
        return _refuse("negation_mismatch", f"{a.negations} vs {b.negations} negations")
    if a.raw == b.raw:
        return None
    for mine, other in ((a.raw, b.raw), (b.raw, a.raw)):
        for word in mine - other:
            if not word.startswith(_NEG_PREFIXES):
                continue
            for prefix in _NEG_PREFIXES:  # unsafe / safe, uninstall / install, disadvantage / advantage
                if word.startswith(prefix) and len(word) - len(prefix) >= 3 and word[len(prefix):] in other:
                    return _refuse("negation_mismatch", f"{word!r} vs {word[len(prefix):]!r}")
    return None


def _typo(u: str, v: str) -> bool:
    """One adjacent transposition (pyhton), or one vowel swapped in a long word (capitol)."""
    if len(u) != len(v) or len(u) < 5:
        return False
    diff = [i for i in range(len(u)) if u[i] != v[i]]
    if len(diff) == 2 and diff[1] == diff[0] + 1 and u[diff[0]] == v[diff[1]] and u[diff[1]] == v[diff[0]]:
        return True
    return len(diff) == 1 and len(u) >= 7 and u[diff[0]] in _VOWELS and v[diff[0]] in _VOWELS


def _check_languages(a: _Profile, b: _Profile) -> GuardResult | None:
    if a.languages == b.languages and a.code_languages == b.code_languages:
        return None
    for attr in ("languages", "code_languages"):
        la, lb = getattr(a, attr), getattr(b, attr)
        if la == lb:
            continue
        words_a = {w for _, w, _ in a.content}
        words_b = {w for _, w, _ in b.content}
        missing_a = {x for x in lb - la if not any(_typo(x, w) for w in words_a)}
        missing_b = {x for x in la - lb if not any(_typo(x, w) for w in words_b)}
        if missing_a or missing_b:
            return _refuse("language_mismatch", f"{sorted(la)} vs {sorted(lb)}")
    return None


def _check_task(a: _Profile, b: _Profile) -> GuardResult | None:
    if a.tasks != b.tasks:
        return _refuse("task_mismatch", f"{sorted(a.tasks)} vs {sorted(b.tasks)}")
    qa, qb = a.qtypes, b.qtypes
    if ("why" in qa) != ("why" in qb):
        return _refuse("task_mismatch", "why vs not why")
    wh_a, wh_b = qa - {"yesno"}, qb - {"yesno"}
    if ("yesno" in qa and not wh_a and wh_b and "yesno" not in qb) or \
            ("yesno" in qb and not wh_b and wh_a and "yesno" not in qa):
        return _refuse("task_mismatch", f"question {sorted(qa)} vs {sorted(qb)}")
    specific_a, specific_b = wh_a - {"neutral", "why"}, wh_b - {"neutral", "why"}
    if specific_a and specific_b and not specific_a & specific_b:
        return _refuse("task_mismatch", f"question {sorted(qa)} vs {sorted(qb)}")
    return None


def _check_referents(a: _Profile, b: _Profile) -> GuardResult | None:
    if a.referents and b.referents and a.referents != b.referents:
        return _refuse("entity_mismatch", f"{sorted(a.referents)} vs {sorted(b.referents)}")
    if not (a.content or a.numbers or a.units or a.languages or a.code_languages or a.tasks or a.quoted
            or b.content or b.numbers or b.units or b.languages or b.code_languages or b.tasks or b.quoted):
        # only function words ("who are you" / "who am i"): nothing here a paraphrase could be checked by
        return _refuse("content_mismatch", "no content words to compare")
    return None


def _check_polarity(a: _Profile, b: _Profile) -> GuardResult | None:
    if a.raw == b.raw:
        return None
    only_a, only_b = a.raw - b.raw, b.raw - a.raw
    for word in only_a:
        opposite = _ANTONYM_INDEX.get(word)
        if opposite and opposite & only_b:
            return _refuse("polarity_mismatch", f"{word!r} vs {min(opposite & only_b)!r}")
    return None


def _chunks(seq: tuple[tuple[bool, str], ...], joins: set[tuple[str, str]]) -> list[tuple[bool, str]]:
    """Merge adjacent key words that are adjacent in both texts ("new york"), so names move as one."""
    out: list[tuple[bool, str]] = []
    for is_key, value in seq:
        if is_key and out and out[-1][0] and (out[-1][1].rsplit(" ", 1)[-1], value) in joins:
            out[-1] = (True, out[-1][1] + " " + value)
        else:
            out.append((is_key, value))
    return out


def _check_order(a: _Profile, b: _Profile) -> GuardResult | None:
    db = b.directions
    for key, way in a.directions.items():
        if db.get(key, way) != way:  # "flights to Paris" vs "flights from Paris"
            return _refuse("order_mismatch", f"{way} {key!r} vs {db[key]} {key!r}")
    common = set(a.keys) & set(b.keys)
    if len(common) < 2 or [k for k in a.keys if k in common] == [k for k in b.keys if k in common]:
        return None  # nothing moved
    joins = a.adjacent & b.adjacent
    sa, sb = _chunks(a.seq, joins), _chunks(b.seq, joins)
    keys_a = [v for k, v in sa if k]
    keys_b = [v for k, v in sb if k]
    once = {k for k in keys_a if keys_a.count(k) == 1 and keys_b.count(k) == 1}
    if len(once) < 2:
        return None
    pos_a = {v: i for i, (k, v) in enumerate(sa) if k and v in once}
    pos_b = {v: i for i, (k, v) in enumerate(sb) if k and v in once}
    for x, y in combinations(sorted(once, key=pos_a.__getitem__), 2):
        if pos_b[y] < pos_b[x]:
            between_a = [v for _, v in sa[pos_a[x] + 1:pos_a[y]]]
            between_b = [v for _, v in sb[pos_b[y] + 1:pos_b[x]]]
            if between_a and between_a == between_b and not set(between_a) <= _SYMMETRIC_CONNECTORS:
                return _refuse("order_mismatch", f"{x!r} {' '.join(between_a)} {y!r} reversed")
    return None


def _explain_acronyms(left: _Profile, right: _Profile, unexplained_left: set[str],
                      unexplained_right: set[str]) -> set[str]:
    """Unexplained acronyms on the left spelled out on the right ("ML" ~ "machine learning", "WW" ~ "world
    war"); the run's content words must all be unexplained too, so an acronym cannot swallow a difference."""
    explained: set[str] = set()
    canon_of = {w: c for c, w, _ in right.content}
    for canon, surface, _ in left.content:
        n = len(surface)
        if canon not in unexplained_left or not 2 <= n <= 6 or not surface.isalpha():
            continue
        for i in range(len(right.words) - n + 1):
            run = right.words[i:i + n]
            if "".join(w[0] for w in run) != surface:
                continue
            run_canons = {canon_of[w] for w in run if w in canon_of}
            if run_canons and run_canons <= unexplained_right:
                explained.add(canon)
                explained |= run_canons
                break
    return explained


def _check_content(a: _Profile, b: _Profile) -> GuardResult | None:
    only_a, only_b = a.content_set - b.content_set, b.content_set - a.content_set
    if not only_a and not only_b:
        return None
    # a misspelt language name ("pyhton") was let through by the language check; it explains itself here
    names_a, names_b = a.languages | a.code_languages, b.languages | b.code_languages
    only_a = {u for u in only_a if not any(_typo(u, n) for n in names_b)}
    only_b = {u for u in only_b if not any(_typo(u, n) for n in names_a)}
    for u in list(only_a):
        for v in only_b:
            if _typo(u, v):
                only_a.discard(u)
                only_b.discard(v)
                break
    if only_a or only_b:
        explained = _explain_acronyms(a, b, only_a, only_b) | _explain_acronyms(b, a, only_b, only_a)
        only_a -= explained
        only_b -= explained
    if not only_a and not only_b:
        return None
    named = {c for c, _, n in a.content + b.content if n}
    leftover = sorted(only_a | only_b)
    reason = "entity_mismatch" if named & set(leftover) else "content_mismatch"
    return _refuse(reason, f"{sorted(only_a)} vs {sorted(only_b)}")


_CHECKS = (_check_literals, _check_numbers, _check_units, _check_negation, _check_languages, _check_task,
           _check_referents, _check_polarity, _check_order, _check_content)
