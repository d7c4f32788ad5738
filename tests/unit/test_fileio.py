"""qrank.fileio: the one atomic write (temp file in the same folder + fsync + os.replace + folder fsync)."""

from __future__ import annotations

import json
import math
import threading

import pytest

from qrank.fileio import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_content_is_replaced_and_no_temp_file_stays(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")
    atomic_write_bytes(path, b"new content")
    assert path.read_bytes() == b"new content"
    atomic_write_text(path, "é\r\nx")  # UTF-8, no newline translation
    assert path.read_bytes() == "é\r\nx".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_failure_mid_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"generation": 1})

    def half_then_crash(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write('{"generation": 2, "pass')  # a half-written file ...
        raise OSError("disk full")  # ... and the writer dies

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_crash)
    assert json.loads(path.read_text()) == {"generation": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_before_anything_is_written(tmp_path, bad):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"ndcg": 0.5})
    with pytest.raises(ValueError, match="not JSON compliant"):
        atomic_write_json(path, {"ndcg": [0.1, {"deep": bad}]})
    assert json.loads(path.read_text()) == {"ndcg": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_readers_never_see_a_partial_file(tmp_path):
    # a reader racing many replacements sees one complete version or another, never a mix or an empty file
    path = tmp_path / "big.txt"
    versions = [str(i) * 200_000 for i in range(10)]
    atomic_write_text(path, versions[0])
    seen: set[str] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for text in versions[1:] * 3:
            atomic_write_text(path, text)
    finally:
        done.set()
        reader.join()
    assert seen <= set(versions)


def test_parents_are_made_on_request_and_json_keeps_unicode(tmp_path):
    path = tmp_path / "a" / "b" / "x.json"
    with pytest.raises(FileNotFoundError):
        atomic_write_json(path, {})
    atomic_write_json(path, {"name": "café"}, indent=2, make_parents=True)
    assert path.read_text(encoding="utf-8") == '{\n  "name": "café"\n}\n'
