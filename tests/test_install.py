"""shoppulse installed as a user installs it: a wheel built from the checkout (no ``-e``) into a fresh
virtualenv outside the checkout, with the default dependencies only (no embedded ClickHouse, no
matplotlib, no OpenAI client). Migrations and dashboards come from the package itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from checkout import ROOT
from conftest import TEST_PASSWORD, EndpointProcess

pytestmark = pytest.mark.integration

# Never copied into the source tree the wheel is built from: what a clean clone does not hold.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".shoppulse", "build", "*.egg-info", "__pycache__",
                                    ".*_cache", ".hypothesis", ".import_linter_cache")
# The optional extras' modules (and the package itself, which the fresh venv gets from the wheel).
NOT_SHARED = ("chdb", "matplotlib", "openai", "shoppulse", "__editable__", "_shoppulse", "distutils-precedence")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh venv with shoppulse installed from its wheel."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE, symlinks=True)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(work / "wheels"), str(source)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    target = work / "venv"
    venv.create(target, with_pip=False)
    # The default dependencies come from the test's own environment (no network needed), minus the extras'.
    shared = work / "shared-dependencies"
    shared.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(NOT_SHARED) and entry.suffix != ".pth":
            (shared / entry.name).symlink_to(entry)
    site = next((target / "lib").glob("python3.*/site-packages"))
    (site / "shared-dependencies.pth").write_text(f"{shared}\n")
    wheel = next((work / "wheels").glob("shoppulse-*.whl"))
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"), "install",
                           "--quiet", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    shutil.rmtree(source)  # nothing may lean on the checkout it was built from
    return target / "bin"


def run(installed: Path, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": f"{installed}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(cwd), **env}
    return subprocess.run([str(installed / "shoppulse"), *args], env=clean, cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)


def test_a_wheel_install_outside_the_checkout_migrates_and_lints(
        installed: Path, clickhouse_endpoint: EndpointProcess, tmp_path: Path) -> None:
    env = {"CLICKHOUSE_URL": clickhouse_endpoint.url, "CLICKHOUSE_PASSWORD": TEST_PASSWORD,
           "SHOPPULSE_CLICKHOUSE_DATABASE": f"installed_{os.getpid()}"}
    where = subprocess.run([str(installed / "python"), "-c", "import shoppulse; print(shoppulse.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(installed.parent)), where.stdout

    migrated = run(installed, "db", "migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    shipped = len(list((ROOT / "clickhouse").glob("*.sql")))
    assert f"{shipped} migration(s) applied" in migrated.stdout

    linted = run(installed, "dashboards", "lint", "--clickhouse-url", clickhouse_endpoint.url, "--demo-data",
                 env=env, cwd=tmp_path)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    dashboards = len(list((ROOT / "grafana" / "dashboards").glob("*.json")))
    assert f"ok: {dashboards} dashboard(s)" in linted.stdout
    again = run(installed, "dashboards", "lint", "--clickhouse-url", clickhouse_endpoint.url, "--demo-data",
                env=env, cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds" in again.stderr and "scratch database" in again.stderr
    policies = run(installed, "actions", "lint", env={}, cwd=tmp_path)  # the shipped action policies travel too
    assert policies.returncode == 0 and "ok: 3 file(s), 3 well-formed policies" in policies.stdout, policies.stderr


def test_a_command_needing_an_extra_says_which(installed: Path, tmp_path: Path) -> None:
    result = run(installed, "dashboards", "lint", env={}, cwd=tmp_path)  # demo data needs the embedded ClickHouse
    assert result.returncode == 2
    assert "needs chdb, which comes with the local extra: pip install 'shoppulse[local]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_shoppulse_home_points_the_as_code_commands_at_your_own_repository(installed: Path, tmp_path: Path) -> None:
    home = tmp_path / "our-dashboards"
    (home / "alerting").mkdir(parents=True)
    result = run(installed, "alerts", "lint", env={"SHOPPULSE_HOME": str(home)}, cwd=tmp_path)
    assert result.returncode == 2
    assert f"no alerting files (*.yaml in {home / 'alerting'})" in result.stderr
    missing = run(installed, "alerts", "lint", env={"SHOPPULSE_HOME": str(tmp_path / "nowhere")}, cwd=tmp_path)
    assert missing.returncode == 1
    assert "SHOPPULSE_HOME=" in missing.stderr and "is not a folder" in missing.stderr
