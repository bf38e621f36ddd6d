"""The local single-node Kafka broker (KRaft): fetch jars with Maven, format, start, stop."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from pipeline.errors import BrokerUnavailable, StackError
from pipeline.kafka import ensure_topics, wait_for_broker
from pipeline.settings import Settings

log = logging.getLogger(__name__)

POM = Path(str(files("pipeline") / "ops" / "kafka-pom.xml"))  # deploy/kafka/pom.xml, as package data
READY_MARK = ".complete"

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


@dataclass(frozen=True)
class StackStatus:
    """What `hindsight stack status` reports."""

    bootstrap: str
    managed: bool
    running: bool
    pid: int | None
    log_file: str | None


class LocalBroker:
    """A Kafka broker process owned by this project, living under <home>/kafka."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.home / "kafka"
        self.data = self.dir / "data"
        self.props = self.dir / "server.properties"
        self.pid_file = self.dir / "broker.pid"
        self.log_file = self.dir / "broker.log"
        self.out_file = self.dir / "broker.out"

    # ---- fetch -----------------------------------------------------------------------------
    def fetch(self) -> Path:
        """Resolve kafka_2.13 and its runtime dependencies into the jar cache (once)."""
        libs = self.settings.jar_cache
        if (libs / READY_MARK).exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("mvn not found on PATH: Maven is needed to fetch the Kafka jars")
        tmp = libs.with_name(libs.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            f"-Dkafka.version={self.settings.kafka_version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp.resolve()}",
            "-DincludeScope=runtime",
        ]
        log.info("fetching kafka version=%s into=%s", self.settings.kafka_version, libs)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0 or not list(tmp.glob("kafka_2.13-*.jar")):
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise StackError(f"mvn could not fetch Kafka {self.settings.kafka_version}: {' | '.join(tail)}")
        (tmp / READY_MARK).write_text(self.settings.kafka_version)
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        return libs

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise StackError("java not found on PATH: Java 17+ runs the broker")
        return java

    def _classpath(self) -> str:
        return str(self.settings.jar_cache / "*")

    # ---- format ----------------------------------------------------------------------------
    def _write_config(self) -> None:
        s = self.settings
        self.dir.mkdir(parents=True, exist_ok=True)
        self.props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{s.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data.resolve()}",
                    f"num.partitions={s.partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    # a single node: no reason to delay the first rebalance
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    f"message.max.bytes={max(s.max_record_bytes * 2, 2_097_152)}",
                    "log.retention.check.interval.ms=60000",
                    "",
                ]
            )
        )
        (self.dir / "log4j2.properties").write_text(LOG4J2.format(log=self.log_file.resolve()))

    def format(self) -> None:
        """Format the KRaft log dir once (kept across restarts)."""
        self._write_config()
        if (self.data / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        cmd = [
            self._java(),
            "-cp",
            self._classpath(),
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.props),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise StackError(f"formatting KRaft storage failed: {(proc.stdout + proc.stderr).strip()[-400:]}")
        log.info("kraft storage formatted dir=%s cluster_id=%s", self.data, cluster_id)

    # ---- run -------------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def start(self, wait_s: float = 90.0) -> bool:
        """Start the broker unless running; returns True if this call started it."""
        if self.pid() is not None:
            wait_for_broker(self.settings, wait_s)
            return False
        for port in (self.settings.kafka_port, self.settings.controller_port):
            if _listening(port):
                # Another process (often a broker of another HINDSIGHT_HOME) holds it: ours would die with
                # "failed to bind" while the other one answered for it, and "started" would be a lie.
                raise StackError(
                    f"port {port} on 127.0.0.1 is in use by another process (a broker of another "
                    f"HINDSIGHT_HOME than {self.settings.home}?); stop it, or set HINDSIGHT_KAFKA_PORT"
                )
        self.fetch()
        self.format()
        cmd = [
            self._java(),
            f"-Xmx{self.settings.kafka_heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.props),
        ]
        with open(self.out_file, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.pid_file.write_text(str(proc.pid))
        log.info(
            "broker starting pid=%s bootstrap=%s log=%s", proc.pid, self.settings.bootstrap, self.log_file
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(
                    f"broker exited with code {proc.returncode}; see {self.out_file} and {self.log_file}"
                )
            try:
                wait_for_broker(self.settings, 2.0)
                return True
            except BrokerUnavailable:
                continue
        self.stop()
        raise StackError(f"broker did not answer within {wait_s:.0f}s; see {self.log_file}")

    def stop(self, wait_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after wait_s); True if one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)
                if finished == pid:
                    break
            except ChildProcessError:
                pass
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            log.warning("broker did not stop in time, killing pid=%s", pid)
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        log.info("broker stopped pid=%s", pid)
        return True


def stack_up(settings: Settings) -> tuple[bool, list[str]]:
    """Start the local broker (unless a cluster is configured) and create the topics.

    Returns (started_here, topics_created).
    """
    started = False
    if settings.local_broker:
        started = LocalBroker(settings).start()
    return started, ensure_topics(settings)


def stack_down(settings: Settings) -> bool:
    """Stop the local broker; a configured cluster is left alone."""
    if not settings.local_broker:
        return False
    return LocalBroker(settings).stop()


def stack_status(settings: Settings) -> StackStatus:
    if not settings.local_broker:
        try:
            wait_for_broker(settings, 3.0)
            running = True
        except BrokerUnavailable:
            running = False
        return StackStatus(settings.bootstrap, False, running, None, None)
    broker = LocalBroker(settings)
    pid = broker.pid()
    return StackStatus(settings.bootstrap, True, pid is not None, pid, str(broker.log_file))


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka makes them: URL-safe base64 of a random UUID, never starting with
    '-' (the storage tool would read it as an option: 1 id in 64 did, and formatting failed)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _listening(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0
