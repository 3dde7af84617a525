"""The ``kvip-bgp`` command line.

Only the argument parser is built at import: each command imports what it runs, so
``kvip-bgp run`` pauses the cyclic garbage collector (``process.pause_gc``) before the
config loader and the daemon's modules are imported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kvip_bgp import process as process_settings
from kvip_bgp.configfile import commands

if TYPE_CHECKING:
    from kvip_bgp.domain.config import Config

DESCRIPTION = """\
kvip-bgp announces Service VIPs (and static VIPs) as /32 and /128 routes to BGP peers
through ExaBGP, and binds them on a local interface.

  kvip-bgp run --config FILE            the daemon (DaemonSet or systemd)
  kvip-bgp check-config --config FILE   validate; exit 1 listing every problem
  kvip-bgp render-exabgp --config FILE  print the ExaBGP configuration it would use
  kvip-bgp status                       peers, announced VIPs, refused Services (this node)
  kvip-bgp explain NAMESPACE/NAME       why this node does or does not announce a Service
  kvip-bgp manifest control-plane ...   a static Pod announcing the Kubernetes API's VIP
  kvip-bgp import metallb FILE...       a kvip-bgp config from MetalLB resources

The configuration file format is described in docs/configuration.md.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvip-bgp",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--config",
            "-c",
            required=True,
            type=Path,
            metavar="FILE",
            help="YAML configuration file",
        )
        return p

    run = with_config("run", "run the daemon: start ExaBGP, watch, announce")
    run.add_argument(
        "--runtime-dir",
        type=Path,
        default=Path("/run/kvip-bgp"),
        metavar="DIR",
        help="private directory for ExaBGP's generated config and the API socket "
        "(default: /run/kvip-bgp)",
    )
    with_config("check-config", "validate the configuration; exit 1 listing every problem")
    render = with_config("render-exabgp", "print the ExaBGP configuration kvip-bgp would use")
    render.add_argument(
        "--api-socket",
        type=Path,
        default=Path("/run/kvip-bgp/exabgp-api.sock"),
        help="the daemon's API socket the relay process connects to",
    )
    render.add_argument(
        "--show-secrets",
        action="store_true",
        help="write MD5 passwords into the output (default: name the password file only)",
    )
    for name, text in (
        ("status", "print this node's /status as readable tables"),
        ("explain", "why this node does or does not announce a Service"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        if name == "explain":
            p.add_argument("service", metavar="NAMESPACE/NAME")
        p.add_argument(
            "--url",
            help="the daemon's HTTP address (default: from --config's http.listen, "
            "else http://127.0.0.1:9472)",
        )
        p.add_argument("--config", "-c", type=Path, metavar="FILE", help="config to find --url")
        p.add_argument("--json", action="store_true", help="print the raw JSON")
    commands.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in commands.COMMANDS:
        return commands.main(args)
    if args.command in ("status", "explain"):
        from kvip_bgp.configfile.load import load
        from kvip_bgp.ops import report

        # Read here, not in ops: the adapters (ops, configfile...) do not import each other.
        wanted = args.config is not None and not args.url
        return report.main(args, load(args.config) if wanted else None)
    if args.command != "run":
        return _config_command(args)
    process_settings.pause_gc()
    try:
        return _config_command(args)
    finally:
        process_settings.resume_gc()


def _config_command(args: argparse.Namespace) -> int:
    """``run``, ``check-config``, ``render-exabgp``: each reads and validates the file."""
    from kvip_bgp.configfile import reader as config_module
    from kvip_bgp.configfile.watch import read

    try:
        loaded = read(args.config)  # the file's hash too: /status shows which file runs
        cfg = loaded.config
    except config_module.ConfigError as error:
        print(f"kvip-bgp: {args.config}: {len(error.problems)} problem(s):", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if args.command == "check-config":
        print(
            f"{args.config}: ok ({len(cfg.bgp.peers)} peer(s), "
            f"{len(cfg.vips.allowed)} allowed range(s), {len(cfg.static)} static VIP(s))"
        )
        return 0
    if args.command == "render-exabgp":
        from kvip_bgp.bgp.config import render_config

        sys.stdout.write(render_config(cfg, args.api_socket, show_secrets=args.show_secrets))
        return 0
    return _run(cfg, args.runtime_dir, loaded.digest)


def _run(cfg: Config, runtime_dir: Path, digest: str) -> int:
    from kvip_bgp.app import Daemon, StartupError
    from kvip_bgp.ops import log

    log.configure(
        cfg.log.format,
        cfg.log.level,
        secrets=[p.password for p in cfg.bgp.peers if p.password],
    )
    try:
        return Daemon(cfg, runtime_dir, digest).run()
    except StartupError as error:
        import structlog

        structlog.get_logger("kvip_bgp.app").error("app.startup_failed", error=str(error))
        print(f"kvip-bgp: cannot start: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
