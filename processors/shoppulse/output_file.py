"""An output file written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO, cast

NEW_FILE_MODE = 0o644


@contextlib.contextmanager
def replaced_on_success(path: Path) -> Iterator[TextIO]:
    """A text file that becomes ``path`` only when the block ends without an error: a failure (bad
    input, a full disk) leaves an existing ``path`` as it was and no partial file behind. A path
    that is not a regular file (a pipe, a device) is written directly."""
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    if path.exists() and not path.is_file():
        with path.open("w", newline="") as direct:
            yield direct
        return
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else NEW_FILE_MODE
    handle = tempfile.NamedTemporaryFile("w", newline="", dir=path.parent, prefix=f".{path.name}.",  # noqa: SIM115
                                         suffix=".partial", delete=False)
    try:
        with handle:
            yield cast(TextIO, handle)
        os.chmod(handle.name, mode)
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise
