"""The tests' readers of the JSON-lines files live processes write (tests/core_process.py):
they must never trip over a line its writer has not finished, nor hide a finished bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core_process import complete_lines, json_lines, log_records

RECORD = '{"ts": "t", "level": "info", "component": "core", "version": "v", "event": "e"}'


def test_a_half_written_last_line_is_not_a_line_yet(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"n": 1}\n{"n": 2}\n{"n": ')
    assert json_lines(path) == [{"n": 1}, {"n": 2}]
    with path.open("a") as file:
        file.write("3}\n")
    assert json_lines(path) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert log_records(RECORD + "\n" + RECORD[:20]) == log_records(RECORD + "\n")


def test_no_file_yet_is_no_record_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    assert json_lines(tmp_path / "absent.log") == []
    (tmp_path / "blank.log").write_text('\n{"n": 1}\n\n')
    assert json_lines(tmp_path / "blank.log") == [{"n": 1}]
    assert complete_lines("") == [] and complete_lines("no newline") == []


def test_a_finished_line_that_is_not_json_fails(tmp_path: Path) -> None:
    path = tmp_path / "broken.log"
    path.write_text('{"n": 1}\nnot json\n')
    with pytest.raises(ValueError):
        json_lines(path)
    with pytest.raises(AssertionError, match="line 2 is not JSON"):
        log_records(RECORD + "\nnot json\n")
