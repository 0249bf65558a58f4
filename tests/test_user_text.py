"""Issue 16 item 16: file, class, run and account names are shown as typed, never read as Markdown."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from defect_model.photos import synthetic
from ui.text import code, md
from ui.train_data import FOLDER

from conftest import shown, sign_in
from inspect_support import corrupt_png, install_active_run, keep_app_py_as_the_router, photo_bytes

ROOT = Path(__file__).resolve().parents[1]

PUNCTUATION = r"[!-/:-@\[-`{-~]"  # what a backslash may escape in CommonMark
MARKUP = r"[\\`*_{}\[\]()#+\-.!|<>~$:&@]"  # what may start markup in CommonMark, GFM or Streamlit
HOSTILE_NAMES = [
    ":green-badge[pass] x.jpg", "![](http://host/t.png)", "[click](http://evil.example)", "**bold** _it_ `code`",
    "<img src=x onerror=alert(1)>", "$x^2$ and $$y$$", ":material/check_circle: ok.png", ":material_check: ok.png",
    ":smile: :streamlit:", "# heading", "- item", "1. first", "> quote", "two\nlines\r\n# x", "|a|b|\n|-|-|",
    "~~gone~~", "&copy; &#60;", "C:\\data\\x.png", "line-3_v2.0 (copy).png", "www.example.com", "a\\*b",
]


def markup_left(markdown: str) -> list[str]:
    """Markup characters that are not escaped, and ':name' starts that Streamlit turns into icons after parsing."""
    left, i = [], 0
    while i < len(markdown):
        if markdown[i] == "\\" and re.fullmatch(PUNCTUATION, markdown[i + 1:i + 2]):
            i += 2
            continue
        if re.fullmatch(MARKUP, markdown[i]):
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
    assert md("scratch") == "scratch" and md("ok 12, pit; 50% 'a' \"b\"") == "ok 12, pit; 50% 'a' \"b\""
    assert md("a.png") == "a\\.png"


def test_one_home_for_the_escaping():
    import ui.review_widgets

    assert ui.review_widgets.md is md


@pytest.mark.parametrize("name, expected", [
    ("20261130-101500-resnet18-ab12", "`20261130-101500-resnet18-ab12`"),
    ("a`b", "``a`b``"),
    ("`x``", "``` `x`` ```"),
    (":material/home: run", "`:\u200bmaterial/home: run`"),
])
def test_code_spans_cannot_be_closed_by_the_name(name, expected):
    assert code(name) == expected


# -- the pages -------------------------------------------------------------------------------------------------
HOSTILE_FILE = ":green-badge[pass] ![](http:evil.example:t.png) x.png"  # a file name cannot hold '/'
HOSTILE_CLASS = ":green-badge[pass] **ok**"


MARKDOWN_BODIES = ("markdown", "caption", "error", "warning", "info", "success", "toast")
LABELLED = ("expander", "metric", "button", "text_input", "selectbox", "checkbox", "radio", "multiselect")


def rendered_as_markdown(app: AppTest) -> list[str]:
    """Every text on the page that Streamlit reads as Markdown: bodies, captions, alerts, labels and help texts."""
    texts = [element.value for kind in MARKDOWN_BODIES for element in app.get(kind)]
    for element in (element for kind in LABELLED for element in app.get(kind)):
        texts += [text for text in (getattr(element, "label", None), getattr(element, "help", None))
                  if isinstance(text, str)]
    return texts


def assert_shown_literally(app: AppTest, name: str) -> None:
    texts = rendered_as_markdown(app)
    assert any(md(name) in text for text in texts), f"{name!r} is not on the page"
    assert not any(name in text for text in texts), [t for t in texts if name in t]
    assert not any(re.search(r"(?<!\\):green-badge\[", text) for text in texts)


def test_the_train_page_shows_hostile_class_and_folder_names_literally(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    data = tmp_path / "data"
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(data))
    synthetic.generate(data / "demo", per_class=3, size=48, seed=3)
    hostile = data / "line-7"
    shutil.copytree(data / "demo" / "ok", hostile / HOSTILE_CLASS)
    shutil.copytree(data / "demo" / "pit", hostile / "pit")
    app = AppTest.from_file(str(ROOT / "pages" / "train.py"), default_timeout=60)
    sign_in(app, "engineer")
    app.run()
    app.radio(key="train_source").set_value(FOLDER).run()
    app.text_input(key="train_folder").set_value(str(hostile)).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert_shown_literally(app, HOSTILE_CLASS)  # the sample row of the class

    missing = data / HOSTILE_FILE
    app.text_input(key="train_folder").set_value(str(missing)).run()
    assert shown(app.error[0].value).startswith(f"{missing}: the folder does not exist")
    assert_shown_literally(app, HOSTILE_FILE)


@pytest.fixture()
def inspect_env(trained_run, tmp_path, monkeypatch):
    keep_app_py_as_the_router(monkeypatch)
    runs = tmp_path / "runs"
    install_active_run(trained_run, runs)
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(runs))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "db" / "inspections.sqlite"))


def test_the_inspect_page_shows_a_hostile_file_name_literally(inspect_env):
    """A file named ':green-badge[pass] ...' drew a pass badge on its card; '![](...)' would load an image."""
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    sign_in(app, "inspector")
    app.run()
    broken = HOSTILE_FILE.replace("x.png", "broken.png")
    app.file_uploader[0].set_value([(HOSTILE_FILE, photo_bytes("pit", 3), "image/png"),
                                    (broken, corrupt_png(), "image/png")])
    app.run()
    assert app.session_state["inspect_queue"].wait(90)
    app.run()
    assert not app.exception, app.exception
    assert_shown_literally(app, HOSTILE_FILE)  # the detail title and the card
    errors = [shown(e.value) for e in [*app.error, *app.caption]]  # a card's error is a red caption
    assert any(f"{broken}: " in error for error in errors), errors
    assert_shown_literally(app, broken)


CHART_NAMES = HOSTILE_NAMES + ["<a href='http://evil.example'>click</a>", "<b>bold</b><br>x", "&lt;b&gt; &#60;i>"]


def _strings(value) -> list[str]:
    """Every string in a figure's data and layout that Plotly draws (customdata only comes back on a click)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() if k != "customdata" for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    if hasattr(value, "tolist"):
        return _strings(value.tolist())
    return []


def test_chart_labels_show_names_as_written():
    """Plotly reads <b>, <i>, <br>, <span style>, <a href> and entities in labels, titles and hover texts: every
    name reaches a chart with & < > escaped (Plotly turns the escapes back into the characters)."""
    import html

    import numpy as np

    from defect_model.workflows.inspection import FileResult
    from ui.inspect_detail import probability_chart
    from ui.review_widgets import confusion_figure
    from ui.text import plot_text

    for name in CHART_NAMES:
        label = plot_text(name)
        assert html.unescape(label) == name and "<" not in label and ">" not in label
        assert re.findall(r"&[#\w]+;", label) == re.findall(r"&(?:amp|lt|gt);", label)  # only the escapes
    classes = CHART_NAMES[-3:] + ["ok"]
    result = FileResult(index=0, name="x.png", sha256="0", time="", model_id="m", threshold=0.5, verdict="reject",
                        classes=classes, probabilities=np.array([0.7, 0.1, 0.1, 0.1]))
    cells = np.arange(16).reshape(4, 4)
    for figure in (probability_chart(result, ["ok"], 0.5),
                   confusion_figure(cells, classes, title=f"A: {classes[0]}"),
                   confusion_figure(cells, classes, normalise=True)):
        shown_text = _strings(figure.to_dict())
        for name in classes[:3]:
            assert not any(name in s for s in shown_text), name
            assert any(plot_text(name) in s for s in shown_text), name
    # a click on a cell still answers with the names themselves
    points = confusion_figure(cells, classes).data[1].customdata
    assert tuple(points[1]) == (classes[0], classes[1])
