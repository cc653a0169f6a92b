"""Content fingerprints of a stage's external input files and folders.

Keys hash file contents, not modification times: a dataset that is copied, unpacked again or
re-mounted keeps its artifacts, and an edit that keeps the mtime still invalidates them. Reading
every file on each run would cost seconds on a large dataset, so digests are remembered in a
memo file keyed by (path, size, mtime): a file is read again only when one of those changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pipeline.core import fileio, paths


def _digest_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


class DigestMemo:
    """File digests remembered across runs in one JSON file (None: this process only)."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.changed = path, False
        self.entries: dict[str, list] = {}
        if path is not None:
            entries = fileio.read_json(path)
            if isinstance(entries, dict):  # anything else (damaged) only costs a re-read
                self.entries = entries

    def digest(self, file: Path) -> str:
        st = file.stat()
        name = str(file.resolve())
        hit = self.entries.get(name)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        value = _digest_bytes(file.read_bytes())
        self.entries[name] = [st.st_size, st.st_mtime_ns, value]
        self.changed = True
        return value

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        # Drop entries of files that are gone (a regenerated dataset, test folders), or the memo
        # would only grow; this runs only when something was re-read, so rarely.
        self.entries = {name: entry for name, entry in self.entries.items() if os.path.exists(name)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Concurrent runs: each writes its own temp file; the last rename wins, both memos are valid.
        fileio.write_text(self.path, json.dumps(self.entries))
        self.changed = False


def fingerprint(*entries: str | None, memo_path: Path | None = None) -> dict:
    """{entry as written in the config: digest} for input files or folders (a folder's digest
    covers its files' names and contents, not sub-folders); 'missing' for absent paths.

    Labels stay as written so keys do not depend on where the repository is checked out."""
    memo = DigestMemo(memo_path)
    out = {}
    for entry in entries:
        root = paths.resolve(entry)
        if root is None:
            continue
        if root.is_file():
            out[str(entry)] = memo.digest(root)
        elif root.is_dir():
            listing = [(p.name, memo.digest(p)) for p in sorted(root.iterdir()) if p.is_file()]
            out[str(entry)] = _digest_bytes(json.dumps(listing).encode())
        else:
            out[str(entry)] = "missing"
    memo.save()
    return out
