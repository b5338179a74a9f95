"""The checked-in artefacts of the contract: JSON Schema files and the event catalogue's examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shoppulse.events.schema import SCHEMA_VERSION, json_schemas
from shoppulse.project_files import event_catalogue, schemas_dir

_JSON_BLOCK = re.compile(r"```json\n(.*?)```", re.S)


def render_schema(schema: dict[str, object]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path | None = None) -> list[Path]:
    folder = folder or schemas_dir(SCHEMA_VERSION)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = folder / name
        path.write_text(render_schema(schema))
        written.append(path)
    return written


def catalogue_examples(path: Path | None = None) -> list[bytes]:
    """The raw bytes of every JSON example in the catalogue, in order."""
    path = path or event_catalogue()
    return [block.strip().encode() for block in _JSON_BLOCK.findall(path.read_text())]
