"""The series' tracks, which one serves a given sglang release, and which one holds a stage.

A track is a base (the files its series moves up and down), a series of patches against it and
a release table. The 0.5.6 track's base is a stub of sglang 0.5.6 (vendor_stub/), whose patches
name vendor_stub/ paths and are mapped onto each release's files by harness.releases. The fused
track's base is sglang 0.5.23's own file under fused/base/, at sglang's own path, so its patches
name the paths upstream does and apply (`git apply`, `patch -p1`) to a 0.5.23 checkout as they
stand; `git am` takes them as the mails `make export VERSION=<release>` writes for either track.

Stage names are unique across the tracks (each track's baseline has its own name), so
`make apply-<stage>` finds the track from the stage; the other commands take TRACK=<name>
(`--track` on the CLI) and default to the 0.5.6 track.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging.version import Version

from .loader import REPO_ROOT


class TrackError(ValueError):
    """A one-line refusal naming the tracks and what to type."""


@dataclass(frozen=True)
class Track:
    name: str
    base_dir: str  # the tree `make apply-<stage>` moves, relative to the repository root
    patch_dir: str  # holds `series` and the patches
    release_table: str  # the releases the track is derived for
    # Where the patches' paths start: "" when they name repository paths (vendor_stub/...), the
    # base directory when they name sglang's own paths (git apply --directory=<base_dir>).
    patch_root: str = ""
    baseline: str = "baseline"  # the stage without patches: base_dir as committed at HEAD

    @property
    def series_file(self) -> Path:
        return REPO_ROOT / self.patch_dir / "series"

    @property
    def default(self) -> bool:
        return self == DEFAULT

    def present(self, root: Path = REPO_ROOT) -> bool:
        """Whether the checkout at `root` holds this track (a scratch copy may hold only one)."""
        return (root / self.patch_dir / "series").is_file()

    def patch_files(self, root: Path = REPO_ROOT) -> list[str]:
        """The series file's patch names in order (comments and blank lines left out)."""
        series = root / self.patch_dir / "series"
        if not series.exists():
            return []
        lines = (line.split("#", 1)[0].strip() for line in series.read_text().splitlines())
        return [line for line in lines if line]

    def stages(self, root: Path = REPO_ROOT) -> list[str]:
        return [self.baseline] + [stage_name(p) for p in self.patch_files(root)]

    def make(self, target: str) -> str:
        """The make command for `target` on this track, as a user types it."""
        return f"make {target}" if self.default else f"make {target} TRACK={self.name}"

    def harness(self, command: str, *args: str) -> str:
        """The same for `python -m harness <command>`."""
        option = [] if self.default else [f"--track {self.name}"]
        return " ".join(["python -m harness", command, *option, *args])

    @property
    def set_aside(self) -> str:
        """How edits are kept aside: -u, since files a patch adds are untracked. The stash holds the
        stage and the edits against HEAD (baseline): it pops cleanly only at baseline, where
        `status` then finds the stage again ("stage S plus edits")."""
        return f"git stash push -u -- {self.base_dir}"

    @property
    def bring_back(self) -> str:
        return f"`{self.make('unapply')}` then `git stash pop` bring them back"

    def versions(self) -> list[str]:
        with open(REPO_ROOT / self.release_table, "rb") as f:
            return [r["version"] for r in tomllib.load(f)["release"]]

    def span(self) -> str:
        versions = self.versions()
        return f"{versions[0]} - {versions[-1]}"


def stage_name(patch_file: str) -> str:
    """`0002-list-elim.patch` -> `list-elim`."""
    return re.sub(r"^\d+-", "", Path(patch_file).name).removesuffix(".patch")


STUB = Track(name="0.5.6", base_dir="vendor_stub", patch_dir="patches", release_table="patches/releases.toml")
FUSED = Track(
    name="fused",
    base_dir="fused/base",
    patch_dir="fused/patches",
    release_table="fused/RELEASES.toml",
    patch_root="fused/base",
    baseline="fused-baseline",
)
TRACKS = {track.name: track for track in (STUB, FUSED)}
DEFAULT = STUB  # what `make status/unapply/refresh/verify` work on without TRACK=

@cache
def all_releases() -> tuple[str, ...]:
    """Every release from 0.5.5 on, oldest first: each is served by one track."""
    return tuple(sorted((v for track in TRACKS.values() for v in track.versions()), key=Version))


def track(name: str) -> Track:
    if name not in TRACKS:
        raise TrackError(f"no track '{name}': choose one of {', '.join(TRACKS)}")
    return TRACKS[name]


def present(root: Path = REPO_ROOT) -> list[Track]:
    return [t for t in TRACKS.values() if t.present(root)]


def track_for_stage(stage: str, root: Path = REPO_ROOT) -> Track:
    """The track whose series has stage `stage`, else a one-line error listing every track's stages."""
    for candidate in present(root):
        if stage in candidate.stages(root):
            return candidate
    choices = "; ".join(f"track {t.name}: {', '.join(t.stages(root))}" for t in present(root))
    raise TrackError(f"unknown stage '{stage}': choose one of {choices}")


def track_for_version(version: str) -> Track:
    """The track that serves sglang `version`, else a one-line error naming what does."""
    for candidate in TRACKS.values():
        if version in candidate.versions():
            return candidate
    spans = "; ".join(f"track {t.name} serves {t.span()}" for t in TRACKS.values())
    raise TrackError(f"sglang {version} is not a release this series knows ({spans}); choose one of those releases")
