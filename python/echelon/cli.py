"""The ``echelon`` command line: ``check``, ``demo``, ``serve``, ``mock-server``, ``convert``, ``compat``."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="echelon", description="LLM routing: pools, groups, fallback.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_check = sub.add_parser("check", help="validate a config directory and print what it resolves to")
    p_check.add_argument("dir", nargs="?", default="configs", help="config root (holding llms/)")

    p_demo = sub.add_parser("demo", help="run the demo against the built-in mock provider")
    p_demo.add_argument("--configs", default=None, help="config root (default: the shipped configs/)")
    p_demo.add_argument("--requests", type=int, default=300)

    p_serve = sub.add_parser(
        "serve",
        help="serve a config directory as an OpenAI- and Anthropic-compatible HTTP gateway",
        description="Serve CONFIG_DIR over HTTP: POST /v1/chat/completions, POST /v1/messages, GET /v1/models, "
        "/healthz, /readyz, /metrics and a live /status page. SIGTERM or Ctrl-C drains (in-flight requests "
        "finish within [gateway] drain_grace), SIGHUP or a changed config file reloads.",
    )
    p_serve.add_argument("dir", nargs="?", default="configs", metavar="CONFIG_DIR", help="config root (holding llms/)")
    p_serve.add_argument("--host", default=None, help="address to bind (default: [gateway] host, else 127.0.0.1)")
    p_serve.add_argument("--port", type=int, default=None, help="port to bind, 0 for any free one (default: [gateway] port, else 8080)")
    p_serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="bind a non-loopback address although no [[gateway.keys]] are configured",
    )
    p_serve.add_argument("--no-watch", action="store_true", help="do not reload when a config file changes")

    p_mock = sub.add_parser("mock-server", help="run the mock provider server")
    p_mock.add_argument("--host", default="127.0.0.1")
    p_mock.add_argument("--port", type=int, default=8900)
    p_mock.add_argument("--script", default=None, help="JSON file of per-model behaviour scripts")

    p_conv = sub.add_parser("convert", help="write the TOML layout from the original YAML layout")
    p_conv.add_argument("src", help="config root in the YAML layout")
    p_conv.add_argument("dst", help="directory to write the TOML layout into")

    p_compat = sub.add_parser("compat", help="tools for code written against the original system")
    compat_sub = p_compat.add_subparsers(dest="compat_command", required=True)
    p_shims = compat_sub.add_parser(
        "write-shims",
        help="write modules at the original module paths (src/...) that re-export echelon.compat",
    )
    p_shims.add_argument("dir", help="the root of your tree (the directory holding the original src/)")
    p_shims.add_argument("--force", action="store_true", help="also overwrite existing files that are not shims")

    args = parser.parse_args(argv)
    if args.command == "check":
        from ._check import main_check

        return main_check(args.dir)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.configs, args.requests)
    if args.command == "serve":
        return _serve(args)
    if args.command == "mock-server":
        from .testing import serve

        serve(args.host, args.port, args.script)
        return 0
    if args.command == "convert":
        from ._check import main_convert

        return main_convert(args.src, args.dst)
    if args.command == "compat":
        from .compat._shims import write_shims

        try:
            report = write_shims(args.dir, force=args.force)
        except (OSError, ValueError) as err:
            print(f"echelon compat write-shims: {err}", file=sys.stderr)
            return 1
        for path in report.written:
            print(path)
        for path in report.kept:
            print(f"kept (your own package file): {path}", file=sys.stderr)
        for path in report.skipped:
            print(f"skipped (exists and is not a shim; --force overwrites): {path}", file=sys.stderr)
        print(
            f"wrote {len(report.written)} files under {args.dir}; put that directory (and its src/, "
            "if your code imports without the src. prefix) on sys.path",
            file=sys.stderr,
        )
        return 1 if report.skipped else 0
    parser.error(f"unknown command {args.command}")
    return 2


def _serve(args: argparse.Namespace) -> int:
    """Run the gateway until a signal drains it. Python only starts it and waits: requests are
    served by the Rust core, which also handles SIGTERM/SIGINT (drain) and SIGHUP (reload)."""
    import asyncio
    import logging
    import signal

    from .errors import ConfigError
    from .router import Router

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.port is not None and not 0 <= args.port <= 65535:
        print(f"echelon serve: --port must be between 0 and 65535, got {args.port}", file=sys.stderr)
        return 2
    # The gateway drains on Ctrl-C itself; Python's KeyboardInterrupt would only get in its way.
    signal.signal(signal.SIGINT, signal.SIG_DFL)

    async def run() -> int:
        try:
            router = Router.from_dir(args.dir)
        except (ConfigError, OSError) as err:
            print(f"echelon serve: {err}", file=sys.stderr)
            return 1
        with router:
            try:
                gateway = await router.serve(
                    args.host,
                    args.port,
                    allow_unauthenticated=True if args.allow_unauthenticated else None,
                    watch=False if args.no_watch else None,
                    signals=True,
                )
            except (ConfigError, OSError, ValueError) as err:
                print(f"echelon serve: {err}", file=sys.stderr)
                return 1
            print(f"echelon gateway listening on {gateway.url} (config {args.dir})", flush=True)
            await gateway.wait_closed()
        return 0

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
