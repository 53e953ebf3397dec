"""Transcript normalisation for comparing a corpus transcript with an ASR transcript.

Both sides go through the same ``normalise``: Unicode folded (NFKC, curly quotes and dashes
made plain), lower case, accents of Latin, Greek and Cyrillic letters dropped (``café`` ->
``cafe``; marks of other scripts, such as Devanagari vowel signs or Arabic harakat, carry
meaning and stay), contractions expanded (``can't`` -> ``can not``, ``it's`` -> ``it
is``, ``gonna`` -> ``going to``), numbers written as words (``42`` -> ``forty two``, ``1990``
-> ``nineteen ninety``, ``3rd`` -> ``third``, ``$5`` -> ``five dollars``, ``20%`` ->
``twenty percent``, ``3.5`` -> ``three point five``, ``10:30`` -> ``ten thirty``), a few
spelling variants unified (``ok`` -> ``okay``, ``alright`` -> ``all right``), hesitation
fillers and laughs dropped (``um``, ``uh``, ``hmm``, ``haha``: Whisper usually leaves them
out while sitcom transcripts keep them), sound annotations dropped (``[laughter]``,
``(sighs)``, ``*laughs*``), punctuation and symbols (emoji) removed, whitespace collapsed.
Words of every script are kept (letters, combining marks and digits); in scripts written
without spaces (Chinese, Japanese kana, Thai, ...) each character is a word.

The goal is that two transcripts of the same speech end up equal up to real recognition
errors, so that the similarity scores measure content, not writing conventions.
"""

from __future__ import annotations

import functools
import re
import unicodedata

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}

# Contractions whose expansion is unambiguous enough for matching purposes. Both texts are
# expanded the same way, so an imperfect choice (he's = he is / he has) costs nothing.
_CONTRACTIONS = {
    "won't": "will not", "can't": "can not", "cannot": "can not", "shan't": "shall not",
    "ain't": "is not", "let's": "let us", "y'all": "you all", "ma'am": "madam",
    "y'know": "you know", "'em": "them", "'til": "until", "gotcha": "got you",
    "'cause": "because", "c'mon": "come on",
    "gonna": "going to", "wanna": "want to", "gotta": "got to", "gimme": "give me",
    "lemme": "let me", "kinda": "kind of", "sorta": "sort of", "dunno": "do not know",
    "it's": "it is", "he's": "he is", "she's": "she is", "that's": "that is",
    "what's": "what is", "there's": "there is", "here's": "here is", "who's": "who is",
    "where's": "where is", "how's": "how is", "when's": "when is", "why's": "why is",
    "everybody's": "everybody is", "everyone's": "everyone is", "nobody's": "nobody is",
    "somebody's": "somebody is", "someone's": "someone is", "nothing's": "nothing is",
    "something's": "something is", "this's": "this is",
}
_SUFFIXES = (("n't", " not"), ("'re", " are"), ("'m", " am"), ("'ll", " will"),
             ("'ve", " have"), ("'d", " would"))
_VARIANTS = {
    "ok": "okay", "alright": "all right", "till": "until", "til": "until",
    "mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor",
    "yep": "yes", "yup": "yes", "nope": "no", "mum": "mom",
    "goodbye": "good bye", "everytime": "every time",
}
FILLERS = frozenset(
    "um umm ummm uh uhh uhm erm er hmm hmmm hm mm mmm mhm mmhmm ah ahh eh "
    "ha haha hahaha heh".split())
# Sound annotations: [laughter], (laughs), *sighs*, music notes (subtitles and Whisper both
# write them; neither is speech).
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[\u266a\u266b]")

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u0060": "'",
                         "\u00b4": "'", "\u201c": '"', "\u201d": '"', "\u2013": " ",
                         "\u2014": " ", "\u2026": " ", "\u00a0": " "})
_NUMBER = re.compile(
    r"(?P<cur>[$\u00a3\u20ac])?(?P<num>\d+(?:,\d{3})*(?:\.\d+)?)"
    r"(?:(?P<ord>st|nd|rd|th)\b|(?P<pct>%))?")
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
# Scripts written without spaces between words: each character counts as a word, so that
# a Chinese or Thai line is compared character by character rather than as one "word".
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
# Scripts whose accents are dropped for comparison (by Unicode character name).
_FOLDABLE_SCRIPTS = ("LATIN ", "GREEK ", "CYRILLIC ")
_CURRENCY = {"$": ("dollar", "dollars"), "\u00a3": ("pound", "pounds"),
             "\u20ac": ("euro", "euros")}


@functools.lru_cache(maxsize=4096)
def _has_foldable_accents(base: str) -> bool:
    return unicodedata.name(base, "").startswith(_FOLDABLE_SCRIPTS)


def fold_accents(text: str) -> str:
    """``café`` -> ``cafe``: combining marks dropped after Latin, Greek and Cyrillic letters
    only (one side of a pair often spells accents the other leaves out). In other scripts a
    mark is part of the spelling (Devanagari and Thai vowel signs, Arabic harakat), so it
    stays; recomposed afterwards, so that e.g. Hangul syllables come back whole."""
    kept, base = [], ""
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.category(ch)[0] == "M":
            if _has_foldable_accents(base):
                continue
        else:
            base = ch
        kept.append(ch)
    return unicodedata.normalize("NFC", "".join(kept))


def number_to_words(n: int) -> str:
    """Cardinal English words of a non-negative integer, without hyphens or 'and'."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for value, name in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            return (number_to_words(high) + " " + name
                    + ("" if rest == 0 else " " + number_to_words(rest)))
    raise AssertionError(n)  # unreachable


def ordinal_words(n: int) -> str:
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_words(n: int) -> str:
    """1990 -> nineteen ninety, 1905 -> nineteen oh five, 1900 -> nineteen hundred."""
    high, low = divmod(n, 100)
    if low == 0:
        return number_to_words(high) + " hundred"
    if low < 10:
        return number_to_words(high) + " oh " + _ONES[low]
    return number_to_words(high) + " " + number_to_words(low)


def _spell_number(match: re.Match) -> str:
    raw, currency = match.group("num"), match.group("cur")
    integer_part, _, fraction = raw.replace(",", "").partition(".")
    value = int(integer_part)
    if match.group("ord") and not fraction:
        return " " + ordinal_words(value) + " "
    if fraction:
        words = number_to_words(value) + " point " + " ".join(_ONES[int(d)] for d in fraction)
    elif "," not in raw and len(integer_part) == 4 and 1100 <= value <= 1999 and not currency:
        words = year_words(value)
    else:
        words = number_to_words(value)
    if match.group("pct"):
        words += " percent"
    if currency:
        singular, plural = _CURRENCY[currency]
        words += " " + (singular if value == 1 and not fraction else plural)
    return " " + words + " "


def _spell_time(match: re.Match) -> str:
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes == 0:
        return f" {number_to_words(hours)} o'clock "
    tail = ("oh " + _ONES[minutes]) if minutes < 10 else number_to_words(minutes)
    return f" {number_to_words(hours)} {tail} "


def _expand(token: str) -> str:
    if token in _CONTRACTIONS:
        return _CONTRACTIONS[token]
    for suffix, expansion in _SUFFIXES:
        if token.endswith(suffix) and len(token) > len(suffix):
            stem = token[: -len(suffix)]
            return stem + expansion
    return token


def _tokens(text: str) -> list[str]:
    """Runs of letters, combining marks, digits and apostrophes, in any script (a Latin-only
    pattern dropped every Arabic or Chinese word, so that such transcripts were never
    compared); characters of unspaced scripts are words of their own."""
    tokens, current = [], []
    for ch in text:
        if _UNSPACED.match(ch):
            tokens.append("".join(current))
            tokens.append(ch)
            current = []
        elif ch == "'" or unicodedata.category(ch)[0] in "LMN":
            current.append(ch)
        else:
            tokens.append("".join(current))
            current = []
    tokens.append("".join(current))
    return [t for t in tokens if t]


def normalise(text: str | None, drop_fillers: bool = True) -> str:
    """The comparable form of a transcript: lower-case words separated by single spaces."""
    if not text:
        return ""
    text = fold_accents(unicodedata.normalize("NFKC", text).translate(_QUOTES).lower())
    text = _ANNOTATION.sub(" ", text)
    text = _TIME.sub(_spell_time, text)
    text = _NUMBER.sub(_spell_number, text)
    # Hyphens, slashes and the like separate words; apostrophes stay until contractions
    # are expanded (o'clock in _spell_time output included).
    text = re.sub(r"[-/_&+]", lambda m: " and " if m.group() in "&+" else " ", text)
    words: list[str] = []
    for token in _tokens(text):
        token = token.strip("'")
        if not token:
            continue
        token = _VARIANTS.get(token, token)
        for word in _expand(token).split():
            word = _VARIANTS.get(word.replace("'", ""), word.replace("'", ""))
            for part in word.split():
                if part and not (drop_fillers and part in FILLERS):
                    words.append(part)
    return " ".join(words)


def words(text: str | None, drop_fillers: bool = True) -> list[str]:
    """The normalised words of a transcript."""
    normal = normalise(text, drop_fillers=drop_fillers)
    return normal.split() if normal else []
