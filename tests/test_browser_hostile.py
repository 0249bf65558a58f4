"""Issue 16 in a real browser: a handful of the hostile corpus uploaded the way an inspector or engineer would,
each ending in the message the unit tests expect, shown as text, with the rest of the upload unharmed."""

from __future__ import annotations

import pandas as pd
from playwright.sync_api import expect

import hostile_corpus as corpus
from browser_support import choose_file, sign_in, streamlit_server
from inspect_support import CARDS, UPLOADER, inspector_on, upload_files

MARKDOWN_NAME = ":green-badge[pass] **bold** ![](x).png"
# upload name -> (bytes, words its result card shows)
INSPECT_CASES = {
    "good.png": (corpus.photo(), None),
    "truncated.jpg": (corpus.truncated(corpus.photo(fmt="JPEG")), "the image data is damaged or truncated"),
    "notes-renamed.jpg": (b"meeting notes, not a photo\n" * 20, "not an image file"),
    "twelve-bit.png": (corpus.twelve_bit_png_with_sbit(), None),
    "traversal.zip": (corpus.raw_zip([corpus.Member(b"../evil.png", corpus.photo())]), "points outside"),
    MARKDOWN_NAME: (corpus.photo("pit", 3), None),
}


def test_hostile_uploads_on_the_inspect_page_each_get_their_message(browser, model_app, tmp_path, monkeypatch,
                                                                    artifacts_dir):
    for name, (data, _) in INSPECT_CASES.items():
        (tmp_path / name).write_bytes(data)

    page = inspector_on(browser, model_app, monkeypatch, 1400, 3000)
    upload_files(page, [tmp_path / name for name in INSPECT_CASES])
    page.screenshot(path=str(artifacts_dir / "inspect-hostile.png"), full_page=True)

    cards = page.locator(CARDS)
    expect(cards).to_have_count(len(INSPECT_CASES))
    for name, (_, words) in INSPECT_CASES.items():
        card = cards.filter(has_text=name.replace("\\", ""))
        expect(card).to_have_count(1)
        if words:  # refused: the message names the file and says why; no heatmap
            expect(card).to_contain_text(f"{name}: ")
            expect(card).to_contain_text(words)
            expect(card.locator("img")).to_have_count(0)
        else:  # inspected: a verdict and its heatmap overlay
            expect(card.locator("img")).to_have_count(1)
    # A file name written as Markdown is shown as its characters: the card's name is the whole name, with no
    # bold, badge or image of its own inside.
    named = cards.filter(has_text=MARKDOWN_NAME)
    expect(named.locator(".file-name")).to_have_text(MARKDOWN_NAME)
    expect(named.locator(".file-name strong")).to_have_count(0)
    expect(named.locator('[data-testid="stMarkdownBadge"]')).to_have_count(0)

    # The 12-bit frame's note says which white it was scaled by (the results CSV's message column).
    with page.expect_download() as download:
        page.get_by_role("button", name="Download results CSV").click()
    table = pd.read_csv(download.value.path()).set_index("file_name")
    assert "taking 4095 as white (the 12 bits its PNG sBIT chunk declares)" in table.loc["twelve-bit.png", "message"]
    assert table.loc["traversal.zip", "verdict"] == "error"


def test_hostile_zips_on_the_train_page_are_refused_with_a_message_and_a_good_one_is_added(browser, tmp_path,
                                                                                          artifacts_dir):
    zips = {"traversal.zip": corpus.raw_zip([corpus.Member(b"ok/../../evil.png", corpus.photo())]),
            "one-class.zip": corpus.raw_zip([corpus.Member(b"ok/%d.png" % i, corpus.photo("ok", i))
                                             for i in range(3)]),
            "windows.zip": corpus.class_zip("set", separator="\\")}
    for name, data in zips.items():
        (tmp_path / name).write_bytes(data)

    with streamlit_server(tmp_path / "runs", tmp_path / "data") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.set_default_timeout(90_000)
        sign_in(page, url, "engineer", "Eng")
        page.get_by_role("link", name="Train").click()
        page.get_by_text("Upload a .zip").click()
        uploader = page.locator(UPLOADER)
        for name, words in (("traversal.zip", "points outside"), ("one-class.zip", "found 1 class folder")):
            choose_file(page, uploader, tmp_path / name)
            page.get_by_role("button", name="Add dataset").click()
            alert = page.locator('[data-testid="stAlertContentError"]')
            expect(alert).to_contain_text(name)
            expect(alert).to_contain_text(words)
        assert not (tmp_path / "evil.png").exists() and not (tmp_path / "data" / "evil.png").exists()
        page.screenshot(path=str(artifacts_dir / "train-hostile-zip.png"), full_page=True)

        choose_file(page, uploader, tmp_path / "windows.zip")  # backslash paths: still one folder per class
        page.get_by_role("button", name="Add dataset").click()
        expect(page.locator('[data-testid="stAlertContentSuccess"]')).to_contain_text("Saved windows.zip")
        page.get_by_text("Photos per class").wait_for(timeout=120_000)
