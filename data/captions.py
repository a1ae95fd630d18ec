"""Digit captions in several phrasings, and parsers that read digits and attributes back from prompts.

`caption_for(7, "bold", "right", 0)` → "a bold seven slanted to the right". Every phrasing names the
digit (as a word or a numeral); most also name the stroke weight and/or the slant. Evaluation reads
any prompt back with `parse_digit` and `parse_attributes`, so held-out phrasings can be scored too.
"""

from __future__ import annotations

import re

from .attributes import SLANT_CLASSES, WEIGHT_CLASSES

mnist_label_words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# How each slant class reads after a noun ("a seven slanted to the right") and before it
# ("a right-leaning seven").
_SLANT_PHRASE = {
    "left": "slanted to the left",
    "upright": "standing upright",
    "right": "slanted to the right",
}
_SLANT_ADJECTIVE = {"left": "left-leaning", "upright": "upright", "right": "right-leaning"}

# Each phrasing: (template, needs weight, needs slant). Fields: {word} digit word, {numeral},
# {weight}, {slant_phrase}, {slant_adjective}.
_PHRASINGS = (
    ("a {weight} {word} {slant_phrase}", True, True),  # a bold seven slanted to the right
    ("the digit {numeral}, {weight}", True, False),  # the digit 7, thin
    ("handwritten number {word}", False, False),  # handwritten number seven
    ("a {weight} {slant_adjective} {numeral}", True, True),  # a thin upright 3
    ("a {slant_adjective} handwritten {word}", False, True),  # a left-leaning handwritten two
    ("the number {numeral} in a {weight} stroke, {slant_phrase}", True, True),
    ("a {word} with {weight} strokes", True, False),  # a five with bold strokes
    ("a {numeral} {slant_phrase}", False, True),  # a 4 slanted to the left
)
NUM_PHRASINGS = len(_PHRASINGS)
# The words of our captions that take "an" (a vowel sound): "an upright", "an eight", "an 8".
_AN_BEFORE = re.compile(r"\ba (?=(?:upright|eight|8)\b)")


def caption_for(label: int, weight: str | None = None, slant: str | None = None, phrasing: int = 0) -> str:
    """A caption for a digit image.

    Args:
        label: the digit, 0–9.
        weight: "thin", "regular" or "bold" (see `latentzoo.data.measure_attributes`), or None.
        slant: "left", "upright" or "right", or None.
        phrasing: index in `range(NUM_PHRASINGS)`. When the phrasing needs an attribute given as
            None, the caption falls back to "the digit {numeral}" / "handwritten number {word}".

    Returns:
        The caption, e.g. `caption_for(7, "bold", "right", 0)` → "a bold seven slanted to the right".
    """
    label = int(label)
    if not 0 <= label <= 9:
        raise ValueError(f"`label` must be a digit 0-9, got {label}.")
    if weight is not None and weight not in WEIGHT_CLASSES:
        raise ValueError(f"`weight` must be one of {WEIGHT_CLASSES} or None, got {weight!r}.")
    if slant is not None and slant not in SLANT_CLASSES:
        raise ValueError(f"`slant` must be one of {SLANT_CLASSES} or None, got {slant!r}.")
    if not 0 <= phrasing < NUM_PHRASINGS:
        raise ValueError(f"`phrasing` must be in range({NUM_PHRASINGS}), got {phrasing}.")

    template, needs_weight, needs_slant = _PHRASINGS[phrasing]
    if (needs_weight and weight is None) or (needs_slant and slant is None):
        template = "the digit {numeral}" if phrasing % 2 else "handwritten number {word}"
    caption = template.format(
        word=mnist_label_words[label],
        numeral=str(label),
        weight=weight,
        slant_phrase=_SLANT_PHRASE.get(slant),
        slant_adjective=_SLANT_ADJECTIVE.get(slant),
    )
    return _AN_BEFORE.sub("an ", caption)  # "a upright 8" → "an upright 8"


def captions_for(label: int, weight: str | None = None, slant: str | None = None) -> list[str]:
    """All distinct phrasings of `caption_for(label, weight, slant, ·)`, in phrasing order."""
    captions = [caption_for(label, weight, slant, p) for p in range(NUM_PHRASINGS)]
    return list(dict.fromkeys(captions))


_DIGIT_TOKEN = re.compile(r"\b(" + "|".join(mnist_label_words) + r"|\d+)\b", re.IGNORECASE)
_WEIGHT_WORDS = {
    "thin": ("thin", "light", "fine", "skinny"),
    "regular": ("regular", "medium", "normal"),
    "bold": ("bold", "thick", "heavy", "fat"),
}
_SLANT_WORDS = {
    "left": ("left", "left-leaning", "leftward", "leftwards"),
    "upright": ("upright", "straight", "vertical"),
    "right": ("right", "right-leaning", "rightward", "rightwards", "italic"),
}


def _word_pattern(words_by_class: dict[str, tuple[str, ...]]) -> dict[str, re.Pattern]:
    # The look-arounds keep "right" out of "upright" and "bright".
    return {
        name: re.compile(r"(?<![\w])(" + "|".join(map(re.escape, words)) + r")(?![\w])", re.IGNORECASE)
        for name, words in words_by_class.items()
    }


_WEIGHT_PATTERNS = _word_pattern(_WEIGHT_WORDS)
_SLANT_PATTERNS = _word_pattern(_SLANT_WORDS)


def parse_digit(prompt: str) -> int | None:
    """Which digit a prompt asks for: "a bold seven" → 7, "the digit 3, thin" → 3.

    Returns None when the prompt names no digit or several different ones ("a 3 next to an 8").
    Multi-digit numbers ("42") do not count as digits.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"`prompt` must be a str, got {type(prompt).__name__}.")
    found = set()
    for match in _DIGIT_TOKEN.finditer(prompt):
        token = match.group(1).lower()
        if token.isdigit():
            if len(token) == 1:
                found.add(int(token))
        else:
            found.add(mnist_label_words.index(token))
    return found.pop() if len(found) == 1 else None


def _parse_class(prompt: str, patterns: dict[str, re.Pattern]) -> str | None:
    found = [name for name, pattern in patterns.items() if pattern.search(prompt)]
    return found[0] if len(found) == 1 else None


def parse_attributes(prompt: str) -> dict[str, str | None]:
    """Which stroke weight and slant a prompt asks for.

    "a bold seven slanted to the right" → `{"weight": "bold", "slant": "right"}`;
    "handwritten number seven" → `{"weight": None, "slant": None}`. An attribute named in two
    contradicting ways ("thin and bold") parses as None.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"`prompt` must be a str, got {type(prompt).__name__}.")
    return {"weight": _parse_class(prompt, _WEIGHT_PATTERNS), "slant": _parse_class(prompt, _SLANT_PATTERNS)}
