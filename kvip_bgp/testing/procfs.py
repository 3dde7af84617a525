"""What /proc says about a process: alive, parent, children, command line, resource use.

The lab tests, the bench and the soak run all look at kvip-bgp and its ExaBGP this way;
every reader returns an empty value for a process that is gone instead of raising.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` from the state letter on (field 3 of proc(5) is index 0)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # The command name may contain spaces and parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[-1].split()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as dead (a daemon's parent may never reap it)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if len(fields) > 1 else None


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, of all its threads."""
    result: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        result += [int(tok) for tok in text.split()]
    return result


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def exabgp_pid(daemon_pid: int) -> int | None:
    """The ExaBGP process the daemon supervises (``python -m kvip_bgp.bgp.exabgp server``)."""
    for child in children(daemon_pid):
        argv = cmdline(child)
        if any(a.endswith("exabgp") for a in argv) and "server" in argv:
            return child
    return None


def process_roles(daemon_pid: int) -> dict[str, int]:
    """``kvip-bgp`` itself, its ``exabgp``, ExaBGP's ``relay`` helper and the ``bfd``
    process (``bgp.bfd``, only when a peer has BFD)."""
    roles = {"kvip-bgp": daemon_pid}
    pending = [daemon_pid]
    while pending:
        for child in children(pending.pop()):
            line = " ".join(cmdline(child))
            if "kvip_bgp.bgp.relay" in line:
                roles["relay"] = child
            elif "kvip_bgp.bgp.bfd" in line:
                roles["bfd"] = child
            elif "exabgp" in line and "server" in line:
                roles["exabgp"] = child
            pending.append(child)
    return roles


@dataclass(frozen=True)
class ProcessSample:
    """Resource use of one process, from /proc/<pid>/status and fd/."""

    rss_kib: int
    threads: int
    fds: int


def process_sample(pid: int) -> ProcessSample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    values: dict[str, str] = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        values[key] = value.strip()
    rss = int(values.get("VmRSS", "0 kB").split()[0])
    return ProcessSample(rss_kib=rss, threads=int(values.get("Threads", "0")), fds=fds)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (NaN once it is gone)."""
    fields = _stat_fields(pid)
    if len(fields) < 13:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass(frozen=True)
class ThreadCpu:
    """One thread's kernel name (``comm``), CPU-seconds so far, user and system apart
    (system: the kernel working for it, e.g. netlink and socket calls), and its wake-ups
    so far: ``voluntary_ctxt_switches``, one each time it blocked (a sleep, a wait for a
    lock, the GIL or a socket) and so was woken again, which costs CPU of its own."""

    name: str
    user_s: float
    system_s: float
    wakeups: int


def thread_cpu(pid: int) -> dict[int, ThreadCpu]:
    """Every living thread of ``pid`` by thread id, from /proc/<pid>/task/*/{stat,status}
    (empty once ``pid`` is gone; a thread that ends while being read is left out)."""
    threads: dict[int, ThreadCpu] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return threads
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        # comm is in the stat line itself, between the first '(' and the last ')'.
        head, _, rest = stat.rpartition(")")
        fields = rest.split()
        wakeups = _status_value(status, "voluntary_ctxt_switches")
        if len(fields) < 13 or wakeups is None:
            continue
        name = head.partition("(")[2]
        user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
        threads[int(tid)] = ThreadCpu(name, user, system, wakeups)
    return threads


def _status_value(status: str, key: str) -> int | None:
    """The number after ``key:`` in a /proc status text (None if it has no such line)."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value)
    return None


def reaped_children_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid``'s children that exited and were waited for
    (cutime+cstime; NaN once ``pid`` is gone): what ``cpu_seconds`` of the living
    processes cannot show."""
    fields = _stat_fields(pid)
    if len(fields) < 15:
        return float("nan")
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def json_log_lines(path: Path) -> list[dict[str, Any]]:
    """A daemon's JSON log as dicts; a line that is not JSON (a traceback) is kept as
    ``{"event": "unparsed", "line": ...}`` so that nothing it printed is lost."""
    lines: list[dict[str, Any]] = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            lines.append({"event": "unparsed", "line": raw})
    return lines


def run_argv(config: Path, runtime_dir: Path) -> list[str]:
    """``kvip-bgp run`` from this interpreter's venv, as every lab starts the daemon."""
    return [
        str(Path(sys.executable).parent / "kvip-bgp"),
        "run",
        "--config",
        str(config),
        "--runtime-dir",
        str(runtime_dir),
    ]
