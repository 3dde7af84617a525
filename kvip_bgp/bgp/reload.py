"""ExaBGP's side of a reload: the new file is checked by ExaBGP itself before it is used.

A file ExaBGP cannot load, once signalled, leaves it with dead API processes (the relay
included) and refusing every later reload; so the candidate is validated with
``exabgp validate`` apart from the live file, and only then moved over it atomically.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

VALIDATE_TIMEOUT: Final = 30.0


def validate_exabgp(candidate: Path) -> list[str]:
    """ExaBGP's problems with ``candidate`` (empty: it loads), from its own validator."""
    argv = [sys.executable, "-m", "exabgp", "validate", "-n", str(candidate)]
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=VALIDATE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return [f"exabgp validate could not run: {error}"]
    if result.returncode == 0:
        return []
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    starts = [index for index, line in enumerate(lines) if line.startswith("error:")]
    errors = [line for line in lines[starts[0] if starts else -5 :] if line]
    return [f"ExaBGP refuses the rendered configuration: {' '.join(errors)}"]
