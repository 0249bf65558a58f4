"""User text shown as text: file, class, run, dataset and account names, and the messages that quote them.

Streamlit reads Markdown in st.markdown, st.caption, st.error / warning / info / success, st.toast, and
in widget, metric, expander and image-caption labels and help texts. There a file named
':green-badge[pass] x.jpg' drew a pass badge and one named '![](http://host/t.png)' loaded a remote
image. Whatever a user or a file can name goes into those through `md` (or `code`); st.text, st.code,
st.dataframe and selectbox options show text as it is already. Plotly reads a subset of HTML in chart labels,
titles and hover texts (<b>, <i>, <br>, <span style>, <a href> links) and entities: names go there through
`plot_text`.
"""

from __future__ import annotations

import html
import re

# Every ASCII punctuation character that CommonMark, GitHub's extensions or Streamlit can read as markup
# (emphasis, code, links and images, headings, lists, tables, HTML and entities, math, autolinks,
# directives such as ':green-badge[...]'); a backslash before one makes it plain text. The others
# (, ; ' " % / = ? ^) never start markup and are left as they are, so sentences stay readable.
_MARKUP = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&@])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")  # a line break would start a new block: a heading, a list
# Streamlit swaps ':material/name:', ':streamlit:' and emoji shortcodes for icons in the parsed text, where a
# backslash no longer separates them: a zero-width space between the colon and the name does.
_SHORTCODE_START = re.compile(r":(?=[\w+-])")


def md(text: object) -> str:
    """`text` to put inside Streamlit Markdown, shown character for character: no formatting, link, image or icon."""
    plain = _SHORTCODE_START.sub(":\u200b", _CONTROL.sub(" ", str(text)))
    return _MARKUP.sub(r"\\\1", plain)


def code(text: object) -> str:
    """`text` as inline code (run ids, paths), fenced by more backticks than it holds so it cannot end early."""
    plain = _SHORTCODE_START.sub(":\u200b", _CONTROL.sub(" ", str(text)))  # ':material/' is swapped even in code
    fence = "`" * (max(map(len, re.findall(r"`+", plain)), default=0) + 1)
    padded = f" {plain} " if plain.startswith("`") or plain.endswith("`") else plain
    return f"{fence}{padded}{fence}"


def plot_text(text: object) -> str:
    """`text` for a Plotly label, title, legend or hover text, shown as written: with & < > escaped, Plotly finds no
    tag and no entity in it (it turns the escapes back into the characters)."""
    return html.escape(str(text), quote=False)
