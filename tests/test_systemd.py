"""The bare-metal systemd unit, its example config and its installer.

``systemd-analyze verify`` (Debian package ``systemd``) checks the unit; it works without
systemd running as PID 1. It only insists that ExecStart's binary exists, so the unit is
verified as a copy whose /opt/kvip-bgp/venv/bin/kvip-bgp is this checkout's venv's
kvip-bgp: everything else is verified as shipped. Without systemd-analyze the tests skip
on a laptop and fail under ``CI=true``, like ``conftest.require_lab``.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvip_bgp.configfile import load as config_module
from kvip_bgp.domain.config import Config

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD_DIR = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD_DIR / "kvip-bgp.service"
EXAMPLE = SYSTEMD_DIR / "config.example.yaml"
INSTALL = SYSTEMD_DIR / "install.sh"
INSTALLED_BINARY = "/opt/kvip-bgp/venv/bin/kvip-bgp"
VENV_BINARY = Path(sys.executable).parent / "kvip-bgp"


def _need(what: str, present: bool) -> None:
    if present:
        return
    message = f"systemd test needs {what}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: a missing part is a failure, not a skip)")
    pytest.skip(message)


@pytest.fixture
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    _need("systemd-analyze (Debian package systemd)", path is not None)
    assert path is not None
    return path


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, per key in order (continuations not used)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def runnable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with its installed binary path pointed at this venv's kvip-bgp."""
    assert VENV_BINARY.exists(), f"{VENV_BINARY} missing: run make install"
    text = UNIT.read_text() if text is None else text
    assert INSTALLED_BINARY in text
    copy = tmp_path / "kvip-bgp.service"
    copy.write_text(text.replace(INSTALLED_BINARY, str(VENV_BINARY)))
    return copy


def verify(systemd_analyze: str, unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit.parent,
    )


def test_systemd_analyze_verify_passes(systemd_analyze: str, tmp_path: Path) -> None:
    result = verify(systemd_analyze, runnable_copy(tmp_path))
    # verify exits 0 even for unknown keys; it reports them on stderr. Both must be clean.
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_verify_would_catch_a_broken_unit(systemd_analyze: str, tmp_path: Path) -> None:
    """The check above is not vacuous: a misspelt key or bad value shows on stderr."""
    broken = UNIT.read_text().replace("LockPersonality=yes", "LockPersonalty=yes")
    broken = broken.replace("AF_NETLINK", "AF_BOGUS")
    result = verify(systemd_analyze, runnable_copy(tmp_path, broken))
    assert "Unknown key" in result.stderr and "LockPersonalty" in result.stderr
    assert "AF_BOGUS" in result.stderr


def test_unit_hardening(systemd_analyze: str, tmp_path: Path) -> None:
    settings = unit_settings(UNIT.read_text())
    expected = {
        "ExecStart": [f"{INSTALLED_BINARY} run --config /etc/kvip-bgp/config.yaml"],
        # `systemctl reload`: SIGHUP, which kvip-bgp takes as "read the config again".
        "ExecReload": ["/bin/kill -HUP $MAINPID"],
        "Restart": ["on-failure"],
        "RuntimeDirectory": ["kvip-bgp"],
        "RuntimeDirectoryMode": ["0700"],
        "CapabilityBoundingSet": ["CAP_NET_ADMIN"],
        "AmbientCapabilities": ["CAP_NET_ADMIN"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "ProtectKernelTunables": ["yes"],
        "ProtectKernelModules": ["yes"],
        "ProtectControlGroups": ["yes"],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"],
        "LockPersonality": ["yes"],
        "MemoryDenyWriteExecute": ["yes"],
        "RestrictNamespaces": ["yes"],
        "SystemCallArchitectures": ["native"],
        "ReadOnlyPaths": ["/etc/kvip-bgp"],
    }
    assert {key: settings.get(key) for key in expected} == expected
    assert "User" not in settings  # root, but with CAP_NET_ADMIN as its only capability

    # TimeoutStopSec must leave kvip-bgp its whole shutdown_timeout.
    (timeout,) = settings["TimeoutStopSec"]
    match = re.fullmatch(r"(\d+)s?", timeout)
    assert match, timeout
    example = config_module.load(EXAMPLE, environ={})
    assert int(match.group(1)) > example.shutdown_timeout
    assert int(match.group(1)) > Config.__dataclass_fields__["shutdown_timeout"].default

    # systemd's own exposure score for the unit as shipped (10 = unprotected). It runs in
    # the host network namespace with CAP_NET_ADMIN by design, so it cannot reach 0.
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", str(runnable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    score = re.search(r"Overall exposure level for kvip-bgp\.service: (\d+\.\d+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= 3.0, result.stdout


def test_example_config_is_a_bare_metal_config() -> None:
    config = config_module.load(EXAMPLE, environ={})
    assert config.kubernetes.enabled is False
    assert config.static, "static VIPs expected"
    for vip in config.static:
        assert vip.check is not None and vip.check.tcp is not None
        assert vip.maintenance_file is not None
        assert str(vip.maintenance_file).startswith("/etc/kvip-bgp/")
    # Every IPv6 VIP can be announced over the IPv4 session.
    if any(vip.address.version == 6 for vip in config.static):
        assert all(p.address.version == 6 or p.next_hop_v6 for p in config.bgp.peers)


def _set_mdwe() -> None:
    """Child side: the kernel's MemoryDenyWriteExecute (PR_SET_MDWE, Linux >= 6.3)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def test_python_stack_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """The unit sets MemoryDenyWriteExecute=yes; CPython, ExaBGP and pyroute2 cope.

    systemd enforces it with seccomp; the kernel's PR_SET_MDWE prctl enforces the same rule
    (no mapping may become writable and executable), so the stack is run under it here:
    the config check, the ExaBGP config render, imports of every module, a netlink dump
    and a ctypes callback.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    _need("a kernel with PR_SET_MDWE (Linux >= 6.3)", libc.prctl(66, 0, 0, 0, 0) >= 0)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=120, preexec_fn=_set_mdwe
        )

    probe = run(
        sys.executable,
        "-c",
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except OSError:\n"
        "    print('refused')\n",
    )
    assert probe.stdout.strip() == "refused", "MDWE is not in force: the test proves nothing"

    check = run(str(VENV_BINARY), "check-config", "--config", str(EXAMPLE))
    assert check.returncode == 0, check.stderr
    render = run(str(VENV_BINARY), "render-exabgp", "--config", str(EXAMPLE))
    assert render.returncode == 0, render.stderr
    assert "neighbor 192.0.2.1" in render.stdout
    stack = run(
        sys.executable,
        "-c",
        "import ctypes, importlib, pkgutil\n"
        "import kvip_bgp, exabgp.application.main\n"
        "for m in pkgutil.walk_packages(kvip_bgp.__path__, 'kvip_bgp.'):\n"
        "    importlib.import_module(m.name)\n"
        "from pyroute2 import IPRoute\n"
        "with IPRoute() as ipr:\n"
        "    assert ipr.get_links()\n"
        "assert ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)() == 7\n"
        "print('ok')\n",
    )
    assert stack.returncode == 0, stack.stderr
    assert stack.stdout.strip() == "ok"


def _checkout_copy(tmp_path: Path) -> Path:
    """What install.sh needs of the checkout, copied so that pip builds nothing in it."""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "tests"
        ),
    )
    return source


def test_install_script_stages_under_destdir(tmp_path: Path) -> None:
    _need("/bin/sh and install(1)", bool(shutil.which("sh") and shutil.which("install")))
    source = _checkout_copy(tmp_path)
    dest = tmp_path / "dest"
    env = {
        **os.environ,
        "DESTDIR": str(dest),
        "PYTHON": sys.executable,
        # The package's dependencies are not what is under test; its build and entry
        # point are. (setuptools comes from PyPI for the isolated build.)
        "PIP_INSTALL_ARGS": "--no-deps",
    }

    def install() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(source / "deploy/systemd/install.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = install()
    assert first.returncode == 0, first.stdout + first.stderr
    venv = dest / "opt/kvip-bgp/venv"
    assert (venv / "bin/kvip-bgp").is_file()
    assert list((venv / "lib").glob("python3.*/site-packages/kvip_bgp/cli.py"))
    unit = dest / "etc/systemd/system/kvip-bgp.service"
    assert unit.read_text() == UNIT.read_text()
    assert unit.stat().st_mode & 0o777 == 0o644
    config = dest / "etc/kvip-bgp/config.yaml"
    assert config.read_text() == EXAMPLE.read_text()
    assert config.stat().st_mode & 0o777 == 0o640
    assert "systemctl not called" in first.stdout
    assert "systemctl daemon-reload" in first.stdout  # told what to run on the host

    # Running it again upgrades the package but keeps the operator's config.
    config.write_text("# edited by the operator\n")
    second = install()
    assert second.returncode == 0, second.stdout + second.stderr
    assert config.read_text() == "# edited by the operator\n"
    assert "keeping the existing" in second.stdout
