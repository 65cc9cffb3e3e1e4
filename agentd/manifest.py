"""Reading agentd bundles: ``manifest.json`` and the integrity of every file it lists.

A bundle's manifest::

    {"format": "agentd.bundle", "format_version": 1,
     "architecture": "LlamaForCausalLM", "dtype": "float32",
     "created_by": "agentd 0.1.0", "source": "<source name>",
     "parameters": 1234,
     "files": {"config.json": {"sha256": "...", "size": 123}, ...}}

Readers ignore keys they do not know (the ONNX exporter adds its graphs), and
refuse a ``format_version`` newer than :data:`FORMAT_VERSION`. Writing lives in
:mod:`agentd.bundle`; this module needs nothing from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from agentd.errors import ModelLoadError

FORMAT = "agentd.bundle"
#: Newest manifest layout this agentd reads and the one it writes.
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


def verify_manifest(path: str | Path) -> dict[str, Any]:
    """Check a bundle against its ``manifest.json`` and return the manifest.

    Every listed file must lie inside the bundle (no ``..``, absolute paths or
    escaping symlinks), exist, and match its size and sha256; every file the
    bundle holds must be listed. Each failure is a ModelLoadError naming the file.
    Cheap checks run first, so a broken bundle fails before anything is hashed.
    """
    root = Path(path).resolve()
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.resolve().is_relative_to(root):
        raise ModelLoadError(manifest_path, "symlink points outside the bundle")
    manifest = read_manifest(root)
    files: dict[str, dict[str, Any]] = manifest["files"]
    listed = {relative: _listed_file(root, relative) for relative in files}
    for relative, file_path in listed.items():
        actual_size = file_path.stat().st_size
        if actual_size != files[relative]["size"]:
            raise ModelLoadError(
                file_path, f"size is {actual_size} bytes, {MANIFEST_FILE} says {files[relative]['size']} (truncated or modified)"
            )
    _reject_unlisted(root, files)
    for relative, file_path in listed.items():
        if sha256_file(file_path) != files[relative]["sha256"]:
            raise ModelLoadError(file_path, f"sha256 does not match {MANIFEST_FILE} (corrupted or modified after import)")
    return manifest


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed (``hashlib.file_digest`` reuses one buffer, GIL released)."""
    try:
        with path.open("rb", buffering=0) as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise ModelLoadError(path, f"cannot read ({exc.strerror or exc})") from None


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    """Parse a bundle's ``manifest.json`` and check its structure, without hashing any file."""
    manifest_path = Path(bundle) / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(manifest_path, f"invalid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ModelLoadError(manifest_path, "expected a JSON object")
    if manifest.get("format") != FORMAT:
        raise ModelLoadError(manifest_path, f"unknown bundle format {manifest.get('format')!r} (expected {FORMAT!r})")
    version = manifest.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelLoadError(manifest_path, f"invalid format_version {version!r} (expected a positive integer)")
    if version > FORMAT_VERSION:
        raise ModelLoadError(
            manifest_path,
            f"bundle format_version {version} is newer than this agentd supports ({FORMAT_VERSION}); upgrade agentd",
        )
    for key in ("architecture", "dtype"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise ModelLoadError(manifest_path, f"missing or invalid {key!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelLoadError(manifest_path, "'files' must be a non-empty object")
    for relative, entry in files.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and len(entry["sha256"]) == 64
            and type(entry.get("size")) is int
            and entry["size"] >= 0
        ):
            raise ModelLoadError(manifest_path, f"entry {relative!r} needs a 64-digit 'sha256' and an integer 'size'")
    return manifest


def _listed_file(root: Path, relative: str) -> Path:
    """The bundle file a manifest entry names, refusing anything outside ``root``."""
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or "\\" in relative or ".." in pure.parts:
        shown = relative if pure.is_absolute() else root / relative
        raise ModelLoadError(shown, f"listed in {MANIFEST_FILE} but outside the bundle")
    if relative == MANIFEST_FILE:
        raise ModelLoadError(root / relative, f"{MANIFEST_FILE} cannot list itself")
    candidate = root / pure
    if not candidate.resolve().is_relative_to(root):
        raise ModelLoadError(candidate, "symlink points outside the bundle")
    if not candidate.exists():
        raise ModelLoadError(candidate, f"listed in {MANIFEST_FILE} but missing")
    if not candidate.is_file():
        raise ModelLoadError(candidate, "not a regular file")
    return candidate


def _reject_unlisted(root: Path, files: dict[str, Any]) -> None:
    """Every file agentd might read must be covered by the hashes (dotfiles aside)."""
    listed = {PurePosixPath(relative) for relative in files}
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [name for name in subdirs if not name.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            relative = PurePosixPath(Path(directory, name).relative_to(root).as_posix())
            if relative != PurePosixPath(MANIFEST_FILE) and relative not in listed:
                raise ModelLoadError(Path(directory, name), f"not listed in {MANIFEST_FILE} (added after import?)")
