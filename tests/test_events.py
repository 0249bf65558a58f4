"""The event stream's readers: a followed file is read only from where the last look stopped; torn lines
are skipped, never the end of reading."""

import json

from defect_model.runs.events import EventLog, EventTail, images_per_s, read_events, training_seconds


def _write(path, *events, end="\n"):
    with path.open("a") as handle:
        handle.write("".join(json.dumps(e) + "\n" for e in events[:-1]) + json.dumps(events[-1]) + end)


def test_a_tail_reads_only_what_was_added_and_waits_for_a_line_being_written(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.update() == []  # no file yet
    _write(path, {"type": "start"}, {"type": "step", "global_step": 1})
    assert [e["type"] for e in tail.update()] == ["start", "step"]
    offset = tail.offset
    with path.open("a") as handle:
        handle.write('{"type": "step", "glo')  # the writer is mid-line
    assert tail.update() == [] and tail.offset == offset
    with path.open("a") as handle:
        handle.write('bal_step": 2}\n')
    assert tail.update() == [{"type": "step", "global_step": 2}]
    assert len(tail.events) == 3


def test_a_torn_line_in_the_middle_is_skipped_and_the_rest_still_read(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "start"}\n{"type": "st\n{"type": "end", "state": "done", "elapsed_s": 12.5}\n')
    assert [e["type"] for e in read_events(path)] == ["start", "end"]
    assert training_seconds(read_events(path)) == 12.5
    tail = EventTail(path)
    assert [e["type"] for e in tail.update()] == ["start", "end"]


def test_a_replaced_file_is_read_again_from_its_start(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for step in range(5):
        log({"type": "step", "global_step": step})
    tail = EventTail(path)
    assert len(tail.update()) == 5
    path.write_text(json.dumps({"type": "start"}) + "\n")  # a run folder deleted and made again
    assert [e["type"] for e in tail.update()] == ["start"] and len(tail.events) == 1


def test_speed_leaves_out_each_processes_warm_up_steps():
    events = [{"type": "start"}] + [{"type": "step", "images_per_s": r} for r in (1, 1, 50, 52)]
    events += [{"type": "start"}] + [{"type": "step", "images_per_s": r} for r in (2, 2, 48)]
    assert images_per_s(events) == 50
    assert images_per_s([{"type": "start"}]) is None
