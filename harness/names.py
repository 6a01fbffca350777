"""How a release names what the series names (patches/releases.toml): read without git, so a GPU
host running releases from build/ (bench.release_replay) names them as the derivation did.

- renames: whole identifiers (0.5.11's accept_length -> num_accepted_tokens);
- name_parts: parts of identifiers and of paths (0.5.13's NSA -> DSA: nsa_backend.py ->
  dsa_backend.py, NSAMetadata -> DSAMetadata, compute_nsa_seqlens -> compute_dsa_seqlens);
- paths: files the release moved (a repository path of the series -> the release's).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "patches" / "releases.toml"


def word(name: str) -> re.Pattern:
    return re.compile(rb"\b" + re.escape(name.encode()) + rb"\b")


def part(name: str) -> re.Pattern:
    """`name` as a part of an identifier or path: nsa in nsa_backend, compute_nsa_seqlens or
    attention/nsa/, NSA in NSAMetadata; not the nsa inside a longer word (transaction)."""
    return re.compile(rb"(?<![A-Za-z0-9])" + re.escape(name.encode()) + rb"(?![a-z0-9])")


def rename(data: bytes, renames: dict, parts: dict | None = None) -> bytes:
    """`data` with every whole-word series name in `renames`, and every series part of a name in
    `parts`, replaced by the release's."""
    for old, new in renames.items():
        data = word(old).sub(new.encode(), data)
    for old, new in (parts or {}).items():
        data = part(old).sub(new.encode(), data)
    return data


@dataclass(frozen=True)
class Names:
    """One release's names for the series' (all empty: the series' own)."""

    renames: dict = field(default_factory=dict)
    name_parts: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.renames or self.name_parts or self.paths)

    def name(self, text: str) -> str:
        """An identifier or dotted module name of the series, as the release spells it."""
        return rename(text.encode(), self.renames, self.name_parts).decode()

    def path(self, series_path: str) -> str:
        """Where the release keeps the file the series has at `series_path` (a repository path)."""
        return self.paths.get(series_path) or rename(series_path.encode(), {}, self.name_parts).decode()


def release_names(version: str, table: Path = TABLE) -> Names:
    """`version`'s names in the release table (the series' own for a release it does not rename)."""
    for r in tomllib.loads(table.read_text())["release"]:
        if r["version"] == version:
            return Names(r.get("renames", {}), r.get("name_parts", {}), r.get("paths", {}))
    return Names()
