"""The wheel carries the project's checked-in files (migrations, dashboards, alerting, action policies, scenarios, the
event catalogue) as package data under ``shoppulse/project/``, with the checkout's layout, so an
installed shoppulse needs no checkout (``shoppulse.project_files`` finds them). Everything else is in
pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROJECT_FILES = ("clickhouse", "grafana", "alerting", "actions", "detection", "scenarios", "docs/events.md", "docs/schemas")


class BuildWithProjectFiles(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads them from the checkout itself
            return
        target = Path(self.build_lib) / "shoppulse" / "project"
        for name in PROJECT_FILES:
            source = Path(name)
            if source.is_dir():
                self.copy_tree(str(source), str(target / name))
            else:
                self.mkpath(str((target / name).parent))
                self.copy_file(str(source), str(target / name))


setup(cmdclass={"build_py": BuildWithProjectFiles})
