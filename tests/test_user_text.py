"""Issue 16 item 16: file, class, run and account names are shown as typed, never read as Markdown."""

from __future__ import annotations

import re

import pytest

from ui.text import md

PUNCTUATION = r"[!-/:-@\[-`{-~]"
HOSTILE_NAMES = [
    ":green-badge[pass] x.jpg", "![](http://host/t.png)", "[click](http://evil.example)", "**bold** _it_ `code`",
    "<img src=x onerror=alert(1)>", "$x^2$ and $$y$$", ":material/check_circle: ok.png", ":material_check: ok.png",
    ":smile: :streamlit:", "# heading", "- item", "1. first", "> quote", "two\nlines\r\n# x", "|a|b|\n|-|-|",
    "~~gone~~", "&copy; &#60;", "C:\\data\\x.png", "line-3_v2.0 (copy).png", "www.example.com", "a\\*b",
]


def shown(markdown: str) -> str:
    """The text CommonMark shows for backslash escapes and plain characters (zero-width spaces are invisible)."""
    return re.sub(r"\\(" + PUNCTUATION + ")", r"\1", markdown).replace("\u200b", "")


def markup_left(markdown: str) -> list[str]:
    """Punctuation that is not escaped, and ':name' starts that Streamlit turns into icons after parsing."""
    left, i = [], 0
    while i < len(markdown):
        if markdown[i] == "\\" and re.fullmatch(PUNCTUATION, markdown[i + 1:i + 2]):
            i += 2
            continue
        if re.fullmatch(PUNCTUATION, markdown[i]):
            left.append(markdown[i])
        i += 1
    parsed = re.sub(r"\\(" + PUNCTUATION + ")", r"\1", markdown)
    return left + re.findall(r":[\w+-]", parsed)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_md_shows_a_name_as_typed_with_no_markup_left(name):
    escaped = md(name)
    assert shown(escaped) == re.sub(r"[\r\n]+", " ", name)
    assert markup_left(escaped) == [], escaped
    assert "\n" not in escaped  # a line break would start a heading or a list


def test_plain_names_stay_readable():
    assert md("scratch") == "scratch" and md("ok 12") == "ok 12"
    assert md("a.png") == "a\\.png"


def test_one_home_for_the_escaping():
    import ui.review_widgets

    assert ui.review_widgets.md is md
