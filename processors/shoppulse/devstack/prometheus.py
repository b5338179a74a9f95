"""Debian's Prometheus, scraping every process of the local stack."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from shoppulse.devstack.process import ManagedProcess, require_free_port

SCRAPE_INTERVAL = "5s"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def write_config(path: Path, targets: dict[str, str]) -> Path:
    """A prometheus.yml with one scrape job per component (``job name -> host:port``)."""
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [address]}]} for job, address in targets.items()
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_process(binary: str, data_dir: Path, host: str, port: int, targets: dict[str, str]) -> ManagedProcess:
    require_free_port(host, port, "Prometheus", "SHOPPULSE_PROMETHEUS_PORT")
    config = write_config(data_dir / "prometheus.yml", {"prometheus": f"{host}:{port}", **targets})
    return ManagedProcess("prometheus", [
        binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir / 'tsdb'}",
        f"--web.listen-address={host}:{port}", "--storage.tsdb.retention.time=7d", "--log.format=logfmt",
    ], data_dir / "prometheus.log")
