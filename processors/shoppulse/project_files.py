"""Where shoppulse finds its checked-in files, installed or in a checkout.

Two roots. The **bundled** files belong to this version of the code: the ClickHouse migrations,
the event schemas and catalogue, the load generator's scenarios. They ship inside the package (the
wheel build copies them to ``shoppulse/project/``) and are read from the checkout when running from
one. The **as-code home** holds what a team reviews in Git — dashboards, Grafana provisioning,
alerting files, detection sensitivity — with the checkout's layout (``grafana/dashboards/``, ``alerting/``…).
``SHOPPULSE_HOME`` points it at your own repository; without it the files shipped with shoppulse
are used.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "SHOPPULSE_HOME"
_PACKAGE = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE / "project"  # filled by the wheel build (setup.py); absent in a checkout
_CHECKOUT = _PACKAGE.parents[1]


class ProjectFilesError(RuntimeError):
    """The project's files cannot be found; the message says where it looked and what to do."""


def bundled() -> Path:
    """The files that ship with this version of shoppulse (migrations, event schemas, scenarios)."""
    if _INSTALLED.is_dir():
        return _INSTALLED
    if (_CHECKOUT / "clickhouse").is_dir() and (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT
    raise ProjectFilesError(f"shoppulse's own files are missing from {_INSTALLED}: the package was installed "
                            "without them; reinstall it from a wheel or a checkout (pip install shoppulse)")


def home() -> Path:
    """The as-code files: ``$SHOPPULSE_HOME`` when set, else the ones shipped with shoppulse."""
    configured = os.environ.get(HOME_VARIABLE, "").strip()
    if not configured:
        return bundled()
    path = Path(configured).expanduser()
    if not path.is_dir():
        raise ProjectFilesError(f"{HOME_VARIABLE}={configured} is not a folder: point it at the repository that "
                                "holds grafana/dashboards/ and alerting/, or unset it to use the shipped files")
    return path


def migrations_dir() -> Path:
    return bundled() / "clickhouse"


def schemas_dir(version: int) -> Path:
    return bundled() / "docs" / "schemas" / f"v{version}"


def event_catalogue() -> Path:
    return bundled() / "docs" / "events.md"


def dashboards_dir() -> Path:
    return home() / "grafana" / "dashboards"


def datasources_dir() -> Path:
    return home() / "grafana" / "provisioning" / "datasources"


def alerting_dir() -> Path:
    return home() / "alerting"


def scenarios_dir() -> Path:
    return bundled() / "scenarios"


def detection_dir() -> Path:
    """The detection's tuning (``detection/sensitivity.yaml``), reviewed in Git like the alerting files."""
    return home() / "detection"


def actions_dir() -> Path:
    """The action policies (``actions/*.yaml``), reviewed in Git like the dashboards and alerting files."""
    return home() / "actions"
