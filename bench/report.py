"""How every benchmark hands in its result: `<out>.json` (the numbers) and `<out>.md` (for people), then prints the .md."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def write_report(result: dict, out: str | Path, write_markdown: Callable[[dict, Path], None]) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    write_markdown(result, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())
