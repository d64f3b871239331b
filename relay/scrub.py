"""Text as a subscriber or producer may have encoded it, with every position traced back.

Pure functions, no I/O. `views()` gives the text itself and every reading of it by up to three
decodings in a row (JSON and backslash escapes, percent-encoding, HTML character references), each
view mapping its characters to the span of the original that spelled them. `find_spelled()` finds
a known string in a view with any of its characters encoded or written (a spelling that mixes
encodings is found too), `+` read as a space; `mask()` replaces spans of the original.
redaction.py decides what to look for.
"""

from __future__ import annotations

import html
import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from html.entities import html5

# The common encodings, each read on its own (read at once, a stray `\` or `%` before an encoded
# secret would change how its first character reads): the character that starts one, its tokens.
_JSON = re.compile(
    r"""\\(?: u(?P<hi>[dD][89abAB][0-9a-fA-F]{2})\\u(?P<lo>[dD][c-fC-F][0-9a-fA-F]{2})
         | u(?P<u>[0-9a-fA-F]{4}) | x(?P<x>[0-9a-fA-F]{2}) | (?P<c>[\\/"'bfnrt]) )""",
    re.VERBOSE,
)
# Each pattern starts with its introducer outside any alternation: re then skips to it (14x faster).
_PERCENT = re.compile(
    r"%(?:(?P<pct>[0-7][0-9a-fA-F])|(?P<utf8>[89a-fA-F][0-9a-fA-F](?:%[89a-fA-F][0-9a-fA-F])*))"
)
_HTML = re.compile(r"&(?:\#[0-9]{1,32}|\#[xX][0-9a-fA-F]{1,32}|[a-zA-Z][a-zA-Z0-9]{1,31});?")
_ENCODINGS = (("\\", _JSON), ("%", _PERCENT), ("&", _HTML))
_CONTROL = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# What a cut may leave of an encoded character (or of a reference that then reads as another); a
# cut inside a nested encoding leaves a few (\&quot; cut after its &).
_PARTIAL = (
    r"(?:\\(?:u[0-9a-fA-F]{0,3}|x[0-9a-fA-F]?)?|%[0-9a-fA-F]?|&(?:\#[xX]?[0-9a-fA-F]*|[a-zA-Z][a-zA-Z0-9]*)?)"
)
_PARTIAL_END = re.compile(_PARTIAL + r"\Z")
_SHORT = {"\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t", "\\": "\\", "/": "/", '"': '"', "'": "'"}
DEPTH = 3
MAX_VIEWS = 24
# Longer known strings are found only as a view spells them, never in mixed spellings (a regex
# per character of them would be large, and nested that deep cannot be compiled).
SPELLED_CHARS = 128


class View:
    """A reading of the original text. A decoded view is pieces of its parent view, each copied or
    one decoded character: `at` says where each piece starts here, `pieces` the parent's span it
    reads and whether it was copied (so positions map back without a table per character)."""

    __slots__ = ("_at", "_parent", "_pieces", "text")

    def __init__(
        self,
        text: str,
        parent: View | None = None,
        at: list[int] | None = None,
        pieces: list[tuple[int, int, bool]] | None = None,
    ) -> None:
        self.text = text
        self._parent = parent
        self._at = at or []
        self._pieces = pieces or []

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original's span that spelled text[start:end] (end > start)."""
        if self._parent is None:
            return start, end
        i = bisect_right(self._at, start) - 1
        first, _, copied = self._pieces[i]
        a = first + start - self._at[i] if copied else first
        j = bisect_right(self._at, end - 1) - 1
        first, last, copied = self._pieces[j]
        b = first + end - self._at[j] if copied else last
        return self._parent.span(a, b)

    def position(self, index: int) -> int:
        """Where the original spells text[index]."""
        return self.span(index, index + 1)[0]


def views(text: str, depth: int = DEPTH) -> Iterator[View]:
    """The text, then every distinct reading of it by up to `depth` decodings in a row (at most
    MAX_VIEWS in all)."""
    view = View(text)
    yield view
    seen = {text}
    frontier = [view]
    for _ in range(depth):
        found = []
        for parent in frontier:
            for introducer, token in _ENCODINGS:
                if introducer not in parent.text or len(seen) >= MAX_VIEWS:
                    continue
                decoded = _decode(parent, token)
                if decoded is not None and decoded.text not in seen:
                    seen.add(decoded.text)
                    found.append(decoded)
                    yield decoded
        frontier = found


def _decode(parent: View, token: re.Pattern[str]) -> View | None:
    text = parent.text
    parts: list[str] = []
    at: list[int] = []
    pieces: list[tuple[int, int, bool]] = []
    length = pos = 0
    for match in token.finditer(text):
        decoded = _decode_token(match)
        if decoded is None:
            continue
        a, b = match.span()
        if a > pos:
            parts.append(text[pos:a])
            at.append(length)
            pieces.append((pos, a, True))
            length += a - pos
        parts.append(decoded)
        at.append(length)
        pieces.append((a, b, False))
        length += len(decoded)
        pos = b
    if not pieces:
        return None
    if pos < len(text):
        parts.append(text[pos:])
        at.append(length)
        pieces.append((pos, len(text), True))
    return View("".join(parts), parent, at, pieces)


def _decode_token(match: re.Match[str]) -> str | None:
    """What one encoded character reads as; None when it is not one after all."""
    kind = match.lastgroup
    if kind == "lo":
        high, low = int(match.group("hi"), 16), int(match.group("lo"), 16)
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    if kind in ("u", "x", "pct"):
        code = int(match.group(kind), 16)
        # A lone surrogate reads as nothing: it cannot be stored, and hides nothing between letters.
        return "" if 0xD800 <= code <= 0xDFFF else chr(code)
    if kind == "c":
        char = match.group("c")
        return _CONTROL.get(char, char)
    if kind == "utf8":
        return bytes.fromhex(match.group("utf8").replace("%", "")).decode("utf-8", errors="replace")
    token = match.group()
    decoded = html.unescape(token)
    return None if decoded == token else decoded


def mask(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    """The text with each span replaced by its marker; overlapping spans become one, marked by the
    longest of their markers (REDACTED says more than ***)."""
    merged: list[tuple[int, int, str]] = []
    for start, end, marker in sorted(spans):
        if merged and start < merged[-1][1]:
            first, last, shown = merged[-1]
            merged[-1] = (first, max(last, end), max(shown, marker, key=len))
        else:
            merged.append((start, end, marker))
    out: list[str] = []
    pos = 0
    for start, end, marker in merged:
        out += [text[pos:start], marker]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def cut(text: str, limit: int) -> str:
    """At most `limit` bytes of UTF-8, ended at a character's boundary."""
    if len(text) <= limit // 4 or (len(text) <= limit and text.isascii()):
        return text
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


def find_spelled(text: str, forms: Sequence[str]) -> Iterator[tuple[int, int]]:
    """Each span of the text that spells one of `forms`, any of its characters encoded or written
    (a form longer than SPELLED_CHARS only as the view spells it)."""
    if _has_token(text):
        for form in forms:
            if len(form) <= SPELLED_CHARS:
                for match in _spelling(form).finditer(text):
                    yield match.span()
        forms = [form for form in forms if len(form) > SPELLED_CHARS]
    # Nothing else encoded: only + may stand for a space (read both ways: may mask a little more).
    seen = text.replace("+", " ") if "+" in text else text
    for form in forms:
        form = form.replace("+", " ") if seen is not text else form
        at = seen.find(form)
        while at >= 0:
            yield at, at + len(form)
            at = seen.find(form, at + 1)


def spelled_start(text: str, forms: Sequence[str], least: int) -> int | None:
    """Where the text's end spells the start of one of `forms` (at least `least` characters of it,
    and maybe part of an encoded character a cut left); None if it does not."""
    found: list[int] = []
    if _has_token(text):
        for form in forms:
            if len(form) <= SPELLED_CHARS:
                match = _spelling_start(form, least).search(text, max(0, len(text) - 12 * len(form) - 40))
                found += [match.start()] if match else []
        forms = [form for form in forms if len(form) > SPELLED_CHARS]
    # Nothing else encoded, but + may stand for a space, and a cut may have left part of an escape
    # or one that now reads as another character.
    seen = text.replace("+", " ") if "+" in text else text
    stops = [len(seen)]
    may_cut = "\\" in text or "%" in text or "&" in text
    while (
        may_cut
        and len(stops) < 4
        and (partial := _PARTIAL_END.search(seen, max(0, stops[-1] - 40), stops[-1]))
    ):
        stops.append(partial.start())
    if may_cut:
        stops.append(len(seen) - 1)
    forms = [form.replace("+", " ") for form in forms] if seen is not text else forms
    at = _start_at(seen, forms, least, stops)
    return min([*found, at] if at is not None else found, default=None)


def _start_at(text: str, forms: Iterable[str], least: int, stops: Iterable[int]) -> int | None:
    """The first place where text[:stop], for a stop given, ends with a start of a form."""
    found: int | None = None
    for form in forms:
        head = form[:least]
        for stop in stops:
            at = text.find(head, max(0, stop - len(form)), stop)
            while at >= 0 and not form.startswith(text[at:stop]):
                at = text.find(head, at + 1, stop)
            if at >= 0 and (found is None or at < found):
                found = at
    return found


def plain(text: str) -> bool:
    """True when no character of the text is encoded (nor a + that may be a space): the text is its
    only view, and what it spells is what it says."""
    return "+" not in text and not _has_token(text)


def _has_token(text: str) -> bool:
    """True when some character of the text is encoded (one search per introducer present)."""
    return (
        ("\\" in text and _JSON.search(text) is not None)
        or ("%" in text and _PERCENT.search(text) is not None)
        or ("&" in text and _HTML.search(text) is not None)
    )


@lru_cache(maxsize=1024)
def _spelling(form: str) -> re.Pattern[str]:
    return re.compile("".join(map(_char, form)))


@lru_cache(maxsize=1024)
def _spelling_start(form: str, least: int) -> re.Pattern[str]:
    rest = ""
    for char in reversed(form[least:]):
        rest = f"(?:{_char(char)}{rest})?"
    return re.compile("".join(map(_char, form[:least])) + rest + _PARTIAL + r"{0,3}\Z")


@lru_cache(maxsize=4096)
def _char(char: str) -> str:
    """A regex for one character as written or as one encoding spells it."""
    code = ord(char)
    spellings = [re.escape(char), "".join("%" + _hex(b, 2) for b in char.encode("utf-8", "surrogatepass"))]
    if char == " ":
        spellings.append(r"\+")
    if code < 0x10000:
        spellings.append(r"\\u" + _hex(code, 4))
    else:
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        spellings.append(r"\\u" + _hex(high, 4) + r"\\u" + _hex(low, 4))
    if code < 0x100:
        spellings.append(r"\\x" + _hex(code, 2))
    if char in _SHORT:
        spellings.append(re.escape("\\" + _SHORT[char]))
    spellings += [rf"&\#0*{code};?", rf"&\#[xX]0*{_hex(code, 1)};?"]
    spellings += ["&" + re.escape(name) for name in _named().get(char, ())]
    return "(?:" + "|".join(spellings) + ")"


def _hex(value: int, width: int) -> str:
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{width}x}")


@lru_cache(maxsize=1)
def _named() -> dict[str, list[str]]:
    """HTML's named references (amp;, sol;, ...) by the one character each stands for."""
    names: dict[str, list[str]] = defaultdict(list)
    for name, value in html5.items():
        if len(value) == 1:
            names[value].append(name)
    return dict(names)
