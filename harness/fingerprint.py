"""What a measurement of the series depends on: each patch's changes, hashed (12 hex digits).

Headers are left out, so editing a patch's prose does not stale the data; so are the positions git
writes around the changes (blob ids on `index` lines, hunk-header line numbers), which a change to
an earlier patch shifts without changing this one's. Plain file reads: a GPU host has no git.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_INDEX = re.compile(rb"(?m)^index [0-9a-f]+\.\.[0-9a-f]+(?: \d+)?$")
_HUNK_POSITION = re.compile(rb"(?m)^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@")


def changes(patch: bytes) -> bytes:
    """A patch's diff from its first `diff --git`, without its positions."""
    at = patch.find(b"diff --git ")
    if at < 0:
        return b""
    return _HUNK_POSITION.sub(b"@@", _INDEX.sub(b"index", patch[at:]))


def series_hash(patch_dir: Path, names: list[str]) -> str:
    """The hash of the series `names` (file names in order, in `patch_dir`)."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0" + changes((patch_dir / name).read_bytes()))
    return h.hexdigest()[:12]
