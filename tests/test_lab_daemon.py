"""The lab daemons' shared base, driven with ``sleep`` in this namespace (no root needed).

FRR, BIRD and GoBGP run it for real in the lab tests; these pin what the base promises
them: the log tail in a start timeout, the refusal of a second start, SIGKILL after an
ignored SIGTERM, and pid files for a daemon that forks away.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvip_bgp.testing.daemon import LabDaemon, log_tail, read_pid_file
from kvip_bgp.testing.procfs import pid_alive


class SleeperError(RuntimeError):
    pass


class Sleeper(LabDaemon):
    """``sh`` that logs a line and sleeps; it "answers" once ``ready`` exists."""

    program = "sleeper"
    error = SleeperError
    start_timeout = 2.0

    def __init__(self, workdir: Path, script: str = "exec sleep 60") -> None:
        super().__init__("unused-ns", workdir)
        self.script = script

    @property
    def ready(self) -> Path:
        return self.workdir / "ready"

    def render_config(self) -> str:
        return "# nothing to configure\n"

    def check_config(self) -> None:
        if "bad" in self.script:
            raise SleeperError("bad script")

    def launch(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed by stop)
        self._log.write(b"sleeper: starting\n")
        self._log.flush()
        self._process = subprocess.Popen(["sh", "-c", self.script], stdout=self._log)

    def answers(self) -> bool:
        return self.ready.exists()


class ForkingSleeper(Sleeper):
    """Writes its own pid file, like bgpd ``-d -i FILE``."""

    pid_name = "sleeper.pid"

    def launch(self) -> None:
        pid_file = self.pid_path
        script = f"sh -c 'echo $$ > {pid_file}; exec sleep 60' &"
        subprocess.run(["sh", "-c", script], check=True)


@pytest.fixture
def stopped() -> Iterator[list[LabDaemon]]:
    """Daemons a test started, stopped even when the test fails."""
    daemons: list[LabDaemon] = []
    yield daemons
    for daemon in daemons:
        daemon.stop(timeout=0.5)


def test_start_timeout_names_the_log_tail_and_stop_ends_it(
    tmp_path: Path, stopped: list[LabDaemon]
) -> None:
    daemon = Sleeper(tmp_path)
    stopped.append(daemon)
    with pytest.raises(TimeoutError, match=r"(?s)sleeper in unused-ns.*sleeper: starting"):
        daemon.start(timeout=0.3)
    pid = daemon.pid()
    assert pid is not None and daemon.config_path.read_text().startswith("# nothing")
    daemon.stop()
    assert not pid_alive(pid)
    assert daemon.pid() is None and daemon._process is None and daemon._log is None


def test_second_start_is_refused_and_hard_stop_kills(
    tmp_path: Path, stopped: list[LabDaemon]
) -> None:
    daemon = Sleeper(tmp_path)
    stopped.append(daemon)
    daemon.ready.parent.mkdir(parents=True, exist_ok=True)
    daemon.ready.touch()
    daemon.start()
    assert daemon.running()
    with pytest.raises(SleeperError, match="already running"):
        daemon.start()
    daemon.stop(graceful=False)
    assert not daemon.running()
    daemon.stop()  # a no-op once it is gone


def test_ignored_sigterm_escalates_to_sigkill(tmp_path: Path, stopped: list[LabDaemon]) -> None:
    ready = tmp_path / "ready"
    daemon = Sleeper(tmp_path, f"trap '' TERM; touch {ready}; while :; do sleep 0.05; done")
    stopped.append(daemon)
    daemon.start()
    pid = daemon.pid()
    assert pid is not None
    daemon.stop(timeout=0.3)
    assert not pid_alive(pid)


def test_config_refused_before_launch(tmp_path: Path) -> None:
    daemon = Sleeper(tmp_path, "bad")
    with pytest.raises(SleeperError, match="bad script"):
        daemon.start()
    assert daemon._process is None and not daemon.log_path.exists()


def test_pid_file_daemon(tmp_path: Path, stopped: list[LabDaemon]) -> None:
    daemon = ForkingSleeper(tmp_path)
    stopped.append(daemon)
    daemon.workdir.mkdir(parents=True, exist_ok=True)
    daemon.ready.touch()
    daemon.start()
    pid = read_pid_file(daemon.pid_path)
    assert pid is not None and daemon.pid() == pid
    daemon.stop()
    assert not pid_alive(pid) and read_pid_file(daemon.pid_path) is None


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert log_tail(log).startswith("(no log:")
    log.write_text("")
    assert log_tail(log) == "(log is empty)"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert log_tail(log, 2) == "line 48\nline 49"
