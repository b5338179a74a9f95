"""The sidecar's reviewed files (``detection/`` of the as-code home): read at start, reread when they
change, as a config-map update or an editor's save leaves them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

T = TypeVar("T")
Model = TypeVar("Model", bound=BaseModel)


class ReviewedFileError(ValueError):
    """A reviewed file cannot be used; the message names the file, the place and the fix."""


@dataclass
class FileWatch(Generic[T]):
    """Rereads ``path`` with ``load`` when its size or modification time changed."""

    path: Path
    load: Callable[[Path], T]
    latest: T | None = None  # what it said at the last read that could be used
    _seen: tuple[int, int] | None = None

    def current(self) -> T | None:
        """What the file says: the last read, or the first one (a process that checks it before it starts
        anything applies the same read once started)."""
        return self.changed() if self._seen is None else self.latest

    def changed(self) -> T | None:
        """What the file says when it changed since the last call (the first call reads it); None when it
        did not. Raises ReviewedFileError for a file that cannot be used — it is then not read again until
        it changes once more."""
        try:
            status = self.path.stat()
            seen: tuple[int, int] = (status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            seen = (0, -1)
        if seen == self._seen:
            return None
        self._seen = seen
        self.latest = self.load(self.path)
        return self.latest


def read_reviewed(path: Path, error: type[ReviewedFileError]) -> str | None:
    """The file's text; None when there is no file (what it would say defaults)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {path}: {exc}") from None


def parse_reviewed(text: str, origin: str, model: type[Model], error: type[ReviewedFileError], holds: str,
                   fix: str) -> Model:
    """``text`` as YAML, validated by ``model``; else ``error`` naming ``origin``, the place and the ``fix``
    (``holds``: what its mapping holds, for a file that is no mapping at all)."""
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise error(f"{origin} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(document, dict):
        raise error(f"{origin}: expected a mapping with {holds}, found a {type(document).__name__}")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise error(f"{origin}: {where}: {first['msg']} ({fix})") from None
