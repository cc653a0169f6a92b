"""Content fingerprints and their digest memo."""

from __future__ import annotations

import json
import os

from pipeline.engine.fingerprint import DigestMemo, fingerprint


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_folder_digest_follows_names_and_contents(tmp_path):
    a = _write(tmp_path / "imgs" / "a.png", "aaa")
    _write(tmp_path / "imgs" / "b.png", "bbb")
    base = fingerprint(str(tmp_path / "imgs"))
    a.write_text("aab")
    assert fingerprint(str(tmp_path / "imgs")) != base
    a.write_text("aaa")
    assert fingerprint(str(tmp_path / "imgs")) == base
    a.rename(tmp_path / "imgs" / "c.png")
    assert fingerprint(str(tmp_path / "imgs")) != base


def test_labels_as_written_and_missing(tmp_path):
    f = _write(tmp_path / "x.csv", "id\n1\n")
    out = fingerprint(str(f), None, str(tmp_path / "nope"))
    assert list(out) == [str(f), str(tmp_path / "nope")]
    assert out[str(tmp_path / "nope")] == "missing"


def test_memo_skips_unchanged_files_and_rereads_changed(tmp_path, monkeypatch):
    f = _write(tmp_path / "d" / "a.txt", "one")
    memo_path = tmp_path / "memo.json"
    first = fingerprint(str(f), memo_path=memo_path)
    assert json.loads(memo_path.read_text())
    reads = []
    real = DigestMemo.digest

    def counting(self, file):
        before = self.changed
        value = real(self, file)
        reads.append(self.changed and not before)
        return value

    monkeypatch.setattr(DigestMemo, "digest", counting)
    assert fingerprint(str(f), memo_path=memo_path) == first
    assert reads == [False]  # served from the memo
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert fingerprint(str(f), memo_path=memo_path) == first  # re-read, same bytes
    assert reads[-1] is True
    f.write_text("two")
    assert fingerprint(str(f), memo_path=memo_path) != first


def test_memo_with_stale_digest_is_not_trusted_after_edit(tmp_path):
    # Same size, new mtime: the memo entry must not be reused.
    f = _write(tmp_path / "a.txt", "abc")
    memo_path = tmp_path / "memo.json"
    first = fingerprint(str(f), memo_path=memo_path)
    st = f.stat()
    f.write_text("abd")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert fingerprint(str(f), memo_path=memo_path) != first


def test_damaged_memo_is_ignored(tmp_path):
    f = _write(tmp_path / "a.txt", "abc")
    memo_path = tmp_path / "memo.json"
    memo_path.write_text("{not json")
    assert fingerprint(str(f), memo_path=memo_path) == fingerprint(str(f))
    assert json.loads(memo_path.read_text())  # rewritten whole


def test_memo_drops_entries_of_deleted_files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    _write(a, "one")
    memo_path = tmp_path / "memo.json"
    fingerprint(str(a), memo_path=memo_path)
    assert str(a.resolve()) in json.loads(memo_path.read_text())
    a.unlink()
    _write(b, "two")
    fingerprint(str(b), memo_path=memo_path)
    kept = json.loads(memo_path.read_text())
    assert str(b.resolve()) in kept and str(a.resolve()) not in kept
