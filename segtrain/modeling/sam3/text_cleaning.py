"""Text cleaning before BPE tokenization, as the official SAM 3 tokenizer does it.

The official tokenizer runs ``ftfy.fix_text`` then unescapes HTML twice, collapses whitespace
and lower-cases (clean type ``"lower"``). ``fix_text`` is reproduced here without the ftfy
dependency: its character-level fixers (C1 controls read as Windows-1252, Latin ligatures,
full-/half-width forms, curly quotes, line breaks, lone surrogates, terminal escapes, control
characters, NFC) and its HTML entity decoding, repeated until the text stops changing. Not
reproduced: ftfy's mojibake repair (re-decoding text such as ``"sÃ³"`` that was UTF-8 read as
Latin-1); such text is tokenized as it is written.
"""

import html
import html.entities
import re
import string
import unicodedata

__all__ = ["WHITESPACE", "basic_clean", "whitespace_clean", "canonicalize_text", "get_clean_fn"]

_SINGLE_QUOTES = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = re.compile("[\u201c-\u201f]")
_TERMINAL_ESCAPES = re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")
_C1_CONTROLS = re.compile("[\x80-\x9f]")
_SURROGATE_PAIRS = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")
# Unicode White_Space (what ``\s`` matches in the ``regex`` package the official code uses;
# Python's ``\s`` also matches U+001C..U+001F).
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WHITESPACE_RUN = re.compile(f"[{WHITESPACE}]+")
_HTML_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")


def _build_html_entities():
    # Named entities that end in a semicolon, plus the upper-cased form of the lower-case ones
    # whose upper-cased name is not itself an entity ("&EACUTE;" -> "É").
    entities = {}
    for name, char in html.entities.html5.items():
        if not name.endswith(";"):
            continue
        entities["&" + name] = char
        upper = "&" + name.upper()
        if name == name.lower() and html.unescape(upper) == upper:
            entities[upper] = char.upper()
    return entities


_HTML_ENTITIES = _build_html_entities()

_LIGATURES = {
    ord(char): expansion
    for char, expansion in {
        "\u0132": "IJ",
        "\u0133": "ij",
        "\u0149": "\u02bcn",
        "\u01f1": "DZ",
        "\u01f2": "Dz",
        "\u01f3": "dz",
        "\u01c4": "D\u017d",
        "\u01c5": "D\u017e",
        "\u01c6": "d\u017e",
        "\u01c7": "LJ",
        "\u01c8": "Lj",
        "\u01c9": "lj",
        "\u01ca": "NJ",
        "\u01cb": "Nj",
        "\u01cc": "nj",
        "\ufb00": "ff",
        "\ufb01": "fi",
        "\ufb02": "fl",
        "\ufb03": "ffi",
        "\ufb04": "ffl",
        "\ufb05": "\u017ft",
        "\ufb06": "st",
    }.items()
}


def _build_width_map():
    width_map = {0x3000: " "}
    for code in range(0xFF01, 0xFFF0):
        normal = unicodedata.normalize("NFKC", chr(code))
        if normal != chr(code):
            width_map[code] = normal
    return width_map


_WIDTH_MAP = _build_width_map()

_CONTROL_CHARS = dict.fromkeys(
    [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFD)]
)


def _unescape_entity(match):
    entity = match.group(0)
    if entity in _HTML_ENTITIES:
        return _HTML_ENTITIES[entity]
    if entity.startswith("&#"):
        char = html.unescape(entity)
        return entity if ";" in char else char
    return entity


def _c1_as_windows_1252(match):
    # Bytes that Windows-1252 leaves undefined keep their Latin-1 code point.
    raw = match.group(0).encode("latin-1")
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return match.group(0)


def _join_surrogate_pair(match):
    high, low = match.group(0)
    return chr(0x10000 + (ord(high) - 0xD800) * 0x400 + (ord(low) - 0xDC00))


def _fix_line_breaks(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\u2028", "\n").replace("\u2029", "\n").replace("\u0085", "\n")


def _fix_segment(text, unescape_html):
    while True:
        before = text
        if unescape_html:
            text = _HTML_ENTITY.sub(_unescape_entity, text)
        text = _C1_CONTROLS.sub(_c1_as_windows_1252, text)
        text = text.translate(_LIGATURES)
        text = text.translate(_WIDTH_MAP)
        text = _SINGLE_QUOTES.sub("'", _DOUBLE_QUOTES.sub('"', text))
        text = _fix_line_breaks(text)
        if _SURROGATES.search(text):
            text = _SURROGATES.sub("\ufffd", _SURROGATE_PAIRS.sub(_join_surrogate_pair, text))
        text = _TERMINAL_ESCAPES.sub("", text)
        text = text.translate(_CONTROL_CHARS)
        text = unicodedata.normalize("NFC", text)
        if text == before:
            return text


def fix_text(text: str) -> str:
    """ftfy's ``fix_text`` fixers, applied line by line (see the module docstring). As in ftfy,
    HTML entities are decoded only until a line containing ``"<"`` is met."""
    fixed = []
    unescape_html = True
    for line in re.findall(r"[^\n]*\n|[^\n]+", text):
        unescape_html = unescape_html and "<" not in line
        fixed.append(_fix_segment(line, unescape_html))
    return "".join(fixed)


def basic_clean(text: str) -> str:
    text = fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text: str) -> str:
    return _WHITESPACE_RUN.sub(" ", text).strip()


def canonicalize_text(text: str) -> str:
    """Lower-case, underscores to spaces, ASCII punctuation removed, whitespace collapsed."""
    text = text.replace("_", " ").translate(str.maketrans("", "", string.punctuation)).lower()
    return whitespace_clean(text)


def _clean_lower(text):
    return whitespace_clean(basic_clean(text)).lower()


def _clean_whitespace(text):
    return whitespace_clean(basic_clean(text))


def _clean_canonicalize(text):
    return canonicalize_text(basic_clean(text))


_CLEAN_FNS = {"lower": _clean_lower, "whitespace": _clean_whitespace, "canonicalize": _clean_canonicalize}


def get_clean_fn(clean: str):
    """The cleaning function for a clean type: ``"lower"`` (SAM 3), ``"whitespace"``, ``"canonicalize"``."""
    if clean not in _CLEAN_FNS:
        raise ValueError(f"tokenizer clean={clean!r} is not one of {sorted(_CLEAN_FNS)}")
    return _CLEAN_FNS[clean]
