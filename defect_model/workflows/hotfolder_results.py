"""The hot folder's results CSV: one whole line per photo, flushed and fsynced before the photo moves, and the
inspection ids near its end that a crashed batch may already have written."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

from defect_model.workflows.inspection import FileResult

CSV_COLUMNS = ("time", "file", "verdict", "class", "confidence", "model", "inspection_id", "error")
RESULTS_TAIL_BYTES = 1 << 20  # recovery looks for a crashed batch's lines in this much of the CSV's end


def prepare_results(path: Path) -> None:
    """Create the CSV with its header; cut a line torn by a crash mid-write, so every line is whole."""
    with path.open("ab+") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - RESULTS_TAIL_BYTES))
        tail = handle.read()
        if tail and not tail.endswith(b"\n"):
            size = size - len(tail) + tail.rfind(b"\n") + 1
            handle.truncate(size)
            os.fsync(handle.fileno())
    if size == 0:
        append_result(path, list(CSV_COLUMNS))


# The photo checks are the Inspect page's and advise uploading; at the line, a camera writes into a folder.
LINE_WORDS = [
    (r"Upload (JPEG, PNG[^.]*?photos), or a \.zip of them\.", r"Set the camera to write \1 (zips are not opened "
                                                               "here)."),
    (r"Upload an? (JPEG, PNG[^.]*?photo)\.", r"Set the camera to write a \1."),
    (r"Upload the photo again; the copy may not have finished\.", "Write the photo into the watched folder again; "
     "the copy may not have finished (have the camera write a NAME.ready marker, or raise --settle)."),
    (r"(\w[^.;]*?),? and upload it again\.", r"\1, and write it into the watched folder again."),
    (r"[Uu]pload it again", "write it into the watched folder again"),
    (r"the Inspect page's", "the dashboard's"),
    (r"this page", "the hot folder"),
]


def line_words(message: str) -> str:
    """A photo check's message with its advice put for the hot folder (a folder, not an upload on a page)."""
    for pattern, replacement in LINE_WORDS:
        message = re.sub(pattern, replacement, message)
    return message


def csv_line(row: dict) -> list[str]:
    """One CSV line from a logged inspection (a row of the log, or a FileResult's fields in its names)."""
    confidence = row.get("confidence")
    return [row["time"], row["file_name"], row["verdict"], row.get("predicted") or "",
            "" if confidence is None else f"{float(confidence):.4f}", row.get("run_id") or "",
            str(row.get("id") or ""), " ".join(line_words(str(row.get("error") or "")).split())]


def append_result(path: Path, line: list[str]) -> None:
    """Append one line and force it to disk before the photo moves (a PLC may read it at once)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(line)
    with path.open("a", newline="") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())


def ids_in_results(path: Path) -> set[str]:
    """Inspection ids of the lines near the CSV's end (where a crashed batch's lines are)."""
    try:
        with path.open("rb") as handle:
            start = max(0, handle.seek(0, os.SEEK_END) - RESULTS_TAIL_BYTES)
            handle.seek(start)
            tail = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return set()
    lines = tail.splitlines()[1:] if start else tail.splitlines()  # the first line of a tail may be cut
    index = CSV_COLUMNS.index("inspection_id")
    return {fields[index] for fields in csv.reader(lines) if len(fields) > index and fields[index]}


def result_row(result: FileResult) -> dict:
    """A FileResult in the log's column names (what csv_line reads)."""
    return {"time": result.time, "file_name": result.name, "verdict": result.verdict, "predicted": result.predicted,
            "confidence": result.confidence, "run_id": result.model_id, "id": result.inspection_id,
            "error": result.error}
