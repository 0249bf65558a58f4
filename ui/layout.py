"""Page styling and layouts every page shares: the verdict colours, metrics that wrap instead of truncating, a
tab strip that wraps, file names that break at separators, and closing the sidebar after navigation on narrow
screens. A fixed style sheet and script of ours (no user text)."""

from __future__ import annotations

import streamlit as st

# The verdicts' colours (white words on them): the cards, the detail and the results table.
COLOURS = {"pass": "#1b5e20", "reject": "#b71c1c", "needs_person": "#b34700", "error": "#546e7a"}

# Narrower than this (a tablet held upright, 768 px), the open sidebar covers the page: close it after a page
# is chosen.
NARROW_PX = 1024
METRIC_WIDTH = 150  # px: a metric narrower than this truncates its number ("31…")

_VERDICT_CSS = "\n".join(f'.verdict-{verdict} {{ background: {colour}; }}'
                         for verdict, colour in COLOURS.items())
STYLE = f"""<style>
.verdict {{ color: #fff; font-weight: 800; font-size: 1.35rem; line-height: 1.25; letter-spacing: 0.02em;
  border-radius: 0.5rem; padding: 0.35rem 0.75rem; }}
.verdict-detail {{ font-size: 2rem; }}
{_VERDICT_CSS}
[data-testid="stMetricValue"] > div, [data-testid="stMetricLabel"] p {{ white-space: normal; overflow: visible;
  text-overflow: clip; }}
[data-testid="stTabs"] [role="tablist"] {{ flex-wrap: wrap; row-gap: 0.25rem; }}
[data-testid="stTabs"] [role="tablist"] button {{ flex-shrink: 0; }}
.file-name {{ font-size: 0.875rem; color: rgba(49, 51, 63, 0.75); overflow-wrap: anywhere; }}
.file-name .ext {{ white-space: nowrap; }}
[class*="st-key-script-"] {{ position: absolute; width: 0; height: 0; overflow: hidden; }}
</style>"""

# Runs in the page (not the frame): a click on a navigation link closes the sidebar when the window is narrow.
CLOSE_SIDEBAR_SCRIPT = """<script>
(() => {
  const doc = window.parent.document;
  if (doc.body.dataset.closesSidebar) return;
  doc.body.dataset.closesSidebar = "1";
  doc.addEventListener("click", (event) => {
    const link = event.target.closest('[data-testid="stSidebarNav"] a');
    if (!link || window.parent.innerWidth >= %d) return;
    setTimeout(() => {
      const close = doc.querySelector('[data-testid="stSidebarCollapseButton"] button');
      if (close) close.click();
    }, 50);
  }, true);
})();
</script>""" % NARROW_PX


def apply_layout() -> None:
    """Called by app.py on every run."""
    st.html(STYLE)


def page_script(script: str, key: str) -> None:
    """A fixed script of ours (never user text) run in an invisible same-origin frame, from where it reaches the
    page through window.parent. The frame reloads, and the script runs again, only when its text changes."""
    with st.container(key=f"script-{key}"):
        st.iframe("<style>body { margin: 0 }</style>" + script, height=1)


def close_sidebar_on_navigation() -> None:
    """Called in the sidebar on every run."""
    page_script(CLOSE_SIDEBAR_SCRIPT, "close-sidebar")


def metric_row(numbers: list[tuple[str, str, str | None]], border: bool = False) -> None:
    """(label, value, help) metrics side by side, wrapping onto more rows where the page is narrow."""
    with st.container(horizontal=True, wrap=True, gap="small"):
        for label, value, help_text in numbers:
            st.metric(label, value, help=help_text, border=border, width=METRIC_WIDTH)
