"""Deterministic lexical grader for closed-book QA answers.

No network, no models: both texts are reduced to normalised tokens and a few
general rules decide whether the answer contains the gold answer.

Normalisation (``normalize_tokens``):
    lowercase, unicode NFKD with accents stripped (and letters such as "æ" or
    "ø" spelled out), thousands separators removed ("1,000" -> "1000"), punctuation
    turned into spaces, number words turned into digits ("eleven" -> "11",
    "nineteenth" -> "19th"), articles dropped, light plural stemming.

Rules, applied to each gold variant (the gold without parenthetical asides,
plus any "(or X)" alternative); the answer is CORRECT if one variant passes:

1. Key tokens are the gold's content tokens (function words removed) that do
   not already appear in the question; if every gold token is in the
   question, all of them are key tokens.
2. Every number among the key tokens must appear in the answer, exactly
   (a decade such as "1970s" also accepts any of its years).
3. Coverage: every key token must be found in the answer, except that one may
   be missing when there are three or more.  Tokens are found exactly or as
   morphological variants sharing a long common prefix ("diverges" ~
   "divergence").
4. Subset answer: if the gold is a single item (no "and", "&", ",", ";"), an
   answer whose every new content token (one not in the question) belongs to
   the gold is also correct ("Euler" for "Leonhard Euler").

Before matching, text the model appended after its answer (a new
"Q:"/"Question:"/"Passage:" block, or a leaked system prompt) is cut off.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from os.path import commonprefix

from seal.grading.base import GradeRequest, Verdict

_ARTICLES = frozenset({"a", "an", "the"})

_FUNCTION_WORDS = frozenset(
    """
    a an the and or of to in on at for by with from as into onto upon than then
    is was were are be been being has have had do does did can could may might
    will would should it its this that these those there which who whom whose
    he she they them him his her their we us our you your i my s v vs not but
    if so about around approximately roughly nearly almost over under more most
    less least very also such some many much several various often generally
    usually mainly primarily only just still even own other another certain
    particular both either all any each every after before since during while
    until between through up out off down like including etc
    """.split()
)

_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
).split()
_SCALES = {"hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000"}
# Far more often a pronoun ("one of the ...") or a time unit than a quantity.
_AMBIGUOUS_NUMBER_WORDS = frozenset({"one", "second"})


def _ordinal_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _number_words() -> dict[str, str]:
    """Map number words to digits ("eleven" -> "11", "nineteenth" -> "19th")."""
    words = {w: str(i) for i, w in enumerate(_UNITS)}
    words |= {w: str(20 + 10 * i) for i, w in enumerate(_TENS)}
    words |= {w: f"{i}{_ordinal_suffix(i)}" for i, w in enumerate(_ORDINALS, start=1)}
    words |= _SCALES
    return {w: d for w, d in words.items() if w not in _AMBIGUOUS_NUMBER_WORDS}


_NUMBER_WORDS = _number_words()

# Lowercase letters that NFKD does not split into a base letter plus accents.
_UNDECOMPOSABLE = str.maketrans(
    {"æ": "ae", "œ": "oe", "ø": "o", "ß": "ss", "ł": "l", "đ": "d", "þ": "th", "\u0131": "i"}
)
_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d),(?=\d{3})")
_NON_WORD = re.compile(r"[^\w\s]|_")
_CONTINUATION = re.compile(r"\n\s*(?:Q|Question|Passage|Context|Topic)\s*:|You are an AI assistant", re.IGNORECASE)
_PARENTHETICAL = re.compile(r"\s\([^)]*\)?")
_OR_ALTERNATIVE = re.compile(r"\s\(\s*or\s+([^)]*)\)?", re.IGNORECASE)
_MULTI_PART = re.compile(r"\band\b|&|,|;", re.IGNORECASE)
_DECADE = re.compile(r"\d{3}0s")

_MIN_PREFIX = 5


def _is_number(token: str) -> bool:
    return token[0].isdigit()


def _stem(word: str) -> str:
    """Strip a plural ending ("cities" -> "city", "boxes" -> "box", "tribes" -> "tribe")."""
    if _is_number(word):
        return word
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalize_tokens(text: str) -> list[str]:
    """Normalise ``text`` into comparable tokens (see the module docstring)."""
    text = unicodedata.normalize("NFKD", text.lower().translate(_UNDECOMPOSABLE))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = _NON_WORD.sub(" ", _THOUSANDS_SEPARATOR.sub("", text))
    words = (_NUMBER_WORDS.get(w, w) for w in text.split())
    return [_stem(w) for w in words if w not in _ARTICLES]


def _content(tokens: Iterable[str]) -> list[str]:
    """Drop function words, keeping everything if nothing else is left."""
    tokens = list(tokens)
    return [t for t in tokens if t not in _FUNCTION_WORDS] or tokens


def _same_word(a: str, b: str) -> bool:
    """True for equal words or morphological variants sharing a long prefix."""
    if a == b:
        return True
    if min(len(a), len(b)) < _MIN_PREFIX or a[:_MIN_PREFIX] != b[:_MIN_PREFIX]:
        return False
    shared = len(commonprefix([a, b]))
    return shared >= min(len(a), len(b)) - 2 and shared >= max(len(a), len(b)) - 4


def _number_found(number: str, pool: set[str]) -> bool:
    """Numbers match exactly, except that a decade ("1970s") contains its years."""
    if number in pool:
        return True
    return bool(_DECADE.fullmatch(number)) and any(len(t) == 4 and t.isdigit() and t[:3] == number[:3] for t in pool)


def _found(token: str, pool: set[str]) -> bool:
    """Whether ``token`` (or, for words, a morphological variant) is in ``pool``."""
    if _is_number(token):
        return _number_found(token, pool)
    return token in pool or any(_same_word(token, other) for other in pool)


def _strip_continuation(answer: str) -> str:
    """Cut text the model appended after its answer (a new prompt block)."""
    match = _CONTINUATION.search(answer)
    return answer[: match.start()] if match and match.start() > 0 else answer


def _gold_variants(gold: str) -> list[str]:
    """The gold without parenthetical asides, plus any "(or X)" alternatives."""
    variants = [_PARENTHETICAL.sub(" ", gold), *_OR_ALTERNATIVE.findall(gold)]
    return [v for v in variants if v.strip()] or [gold]


class _Answer:
    """Pre-normalised question and answer, shared by all gold variants."""

    def __init__(self, question: str, answer: str) -> None:
        self.question_tokens = set(normalize_tokens(question))
        self.tokens = set(normalize_tokens(_strip_continuation(answer)))
        self.new_tokens = {t for t in self.tokens if t not in self.question_tokens and t not in _FUNCTION_WORDS}

    def matches(self, variant: str) -> bool:
        gold = set(_content(normalize_tokens(variant)))
        if not gold:
            return False
        key = (gold - self.question_tokens) or gold
        if any(_is_number(t) and not _found(t, self.tokens) for t in key):
            return False
        missing = sum(not _found(t, self.tokens) for t in key)
        if missing <= (1 if len(key) >= 3 else 0):
            return True
        return self._only_gold_words(gold, variant)

    def _only_gold_words(self, gold: set[str], variant: str) -> bool:
        """Subset-answer rule: everything the answer adds is part of a single-item gold."""
        if not self.new_tokens or _MULTI_PART.search(variant):
            return False
        return all(_found(t, gold) for t in self.new_tokens)


class OfflineGrader:
    """Rule-based grader; deterministic and never returns ``UNGRADED``."""

    name = "offline"

    def is_correct(self, request: GradeRequest) -> bool:
        """Whether ``request.answer`` contains the gold answer (see module rules)."""
        answer = _Answer(request.question, request.answer)
        return any(answer.matches(v) for v in _gold_variants(request.gold))

    def grade(self, requests: Sequence[GradeRequest]) -> list[Verdict]:
        return [Verdict.CORRECT if self.is_correct(r) else Verdict.INCORRECT for r in requests]
