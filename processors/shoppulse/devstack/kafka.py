"""A real Apache Kafka broker (single-node KRaft) from Maven Central jars, run with the machine's Java."""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

from shoppulse.devstack.process import ManagedProcess, StartupError, require_free_port, tail, wait_until

log = logging.getLogger(__name__)

SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
MIN_JAVA = 17
READY_TIMEOUT_S = 90.0
RESOLVED_MARKER = ".resolved"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.shoppulse</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId><version>{kafka}</version>
    </dependency>
    <!-- kafka-tools holds the admin command line tools -->
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{kafka}</version>
    </dependency>
    <!-- Kafka logs through SLF4J 1.x; Log4j 2 is the binding its own distribution ships -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
"""


class MissingToolError(StartupError):
    """Java or Maven is missing; the message says what to install."""


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise MissingToolError(
            f"Java {MIN_JAVA}+ is needed to run the Kafka broker but `java` is not on PATH: "
            "install a JDK/JRE (Debian: apt-get install openjdk-17-jre-headless) "
            "or point KAFKA_BOOTSTRAP_SERVERS at an existing broker"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', out)
    first_line = out.strip().splitlines()[0] if out.strip() else ""
    if match is None or int(match.group(1)) < MIN_JAVA:
        raise MissingToolError(
            f"Kafka 4.x needs Java {MIN_JAVA}+, but `java -version` says: {first_line or '?'}; "
            "install openjdk-17-jre-headless or newer"
        )
    return java


def require_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingToolError(
            "Maven is needed once to fetch the Kafka jars from Maven Central but `mvn` is not on PATH: "
            "install it (Debian: apt-get install maven) or point KAFKA_BOOTSTRAP_SERVERS at an existing broker"
        )
    return mvn


def resolve_kafka(version: str, cache_dir: Path) -> Path:
    """The folder of jars for Kafka ``version``, resolved from Maven Central once and reused after.

    Resolution writes into a temporary folder and renames it, so an interrupted run never
    leaves a half-filled cache behind."""
    home = cache_dir / f"kafka-{SCALA_VERSION}-{version}"
    libs = home / "libs"
    if (home / RESOLVED_MARKER).exists():
        return libs
    mvn = require_maven()
    home.mkdir(parents=True, exist_ok=True)
    pom = home / "pom.xml"
    pom.write_text(_POM.format(kafka=version, scala=SCALA_VERSION, log4j=LOG4J_VERSION))
    staging = home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    log.info("resolving Kafka jars from Maven Central", extra={"version": version, "into": str(libs)})
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise StartupError(
            f"Maven could not resolve Apache Kafka {version}: "
            f"{(result.stdout + result.stderr).strip()[-2000:]}\n"
            "check that Maven Central is reachable (or a mirror in ~/.m2/settings.xml)"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (home / RESOLVED_MARKER).write_text("\n".join(sorted(p.name for p in libs.glob("*.jar"))) + "\n")
    return libs


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in Kafka's URL-safe base64 form."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


class KafkaBroker:
    """A single-node KRaft broker (combined broker + controller) with its own data folder.

    ``start`` formats the storage on first use, starts the JVM and waits until clients can
    fetch metadata; ``stop`` shuts it down cleanly (SIGTERM lets Kafka flush and close its
    logs), so data written before a stop is there after the next start."""

    def __init__(self, libs: Path, data_dir: Path, host: str, port: int, controller_port: int,
                 heap: str = "512m") -> None:
        self.libs = libs
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def start(self) -> None:
        java = require_java()
        require_free_port(self.host, self.port, "the Kafka broker", "SHOPPULSE_KAFKA_PORT")
        require_free_port(self.host, self.controller_port, "the Kafka controller", "SHOPPULSE_KAFKA_CONTROLLER_PORT")
        config = self._write_config()
        if not (self.data_dir / "data" / "meta.properties").exists():
            self._format(java, config)
        self.process = ManagedProcess(
            "kafka", [*self._java_cmd(java), "kafka.Kafka", str(config)], self.log_path,
            env={"KAFKA_HEAP_OPTS": f"-Xmx{self.heap}"},
        )
        self.process.start()
        log.info("kafka broker starting", extra={"bootstrap": self.bootstrap, "pid": self.process.pid})
        try:
            wait_until(self.accepts_clients, READY_TIMEOUT_S, f"Kafka broker on {self.bootstrap}",
                       alive=self.process.is_running, on_fail=lambda: tail(self.log_path))
        except BaseException:
            self.process.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            log.info("kafka broker stopped", extra={"bootstrap": self.bootstrap})

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def accepts_clients(self) -> bool:
        return broker_accepts_clients(self.bootstrap)

    def _java_cmd(self, java: str) -> list[str]:
        return [
            java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp", f"{self.libs}{os.sep}*",
        ]

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            "num.partitions": "1",
            # Topics are created on purpose by `shoppulse up` and the processors, never by a typo.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
            # Retention enforced within seconds rather than Kafka's 5 minutes: a topic that keeps too little
            # (a backfill stamped older than its retention) loses its events while the stack still runs.
            "log.retention.check.interval.ms": "5000",
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _format(self, java: str, config: Path) -> None:
        result = subprocess.run(
            # "--cluster-id=" form: a base64 id may start with "-", which would read as an option.
            [*self._java_cmd(java), "kafka.tools.StorageTool", "format", f"--cluster-id={new_cluster_id()}",
             f"--config={config}", "--ignore-formatted"],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise StartupError(f"formatting Kafka storage in {self.data_dir} failed: "
                               f"{(result.stdout + result.stderr).strip()[-1500:]}")


def broker_accepts_clients(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when the broker answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaConfigurationError, KafkaError

    host, _, port = bootstrap.split(",", maxsplit=1)[0].strip().rpartition(":")
    try:  # a cheap TCP check first: the Kafka client retries a closed port with back-off
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError):
        return False
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                 client_id="shoppulse-probe")
    except KafkaConfigurationError:
        raise
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
