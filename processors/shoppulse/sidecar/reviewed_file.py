"""The sidecar's reviewed files (``detection/`` of the as-code home): read at start, reread when they
change, as a config-map update or an editor's save leaves them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class ReviewedFileError(ValueError):
    """A reviewed file cannot be used; the message names the file, the place and the fix."""


@dataclass
class FileWatch(Generic[T]):
    """Rereads ``path`` with ``load`` when its size or modification time changed."""

    path: Path
    load: Callable[[Path], T]
    _seen: tuple[int, int] | None = None

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
        return self.load(self.path)
