"""The ``echelon`` command line: ``check``, ``demo``, ``mock-server``, ``convert``."""

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

    p_mock = sub.add_parser("mock-server", help="run the mock provider server")
    p_mock.add_argument("--host", default="127.0.0.1")
    p_mock.add_argument("--port", type=int, default=8900)
    p_mock.add_argument("--script", default=None, help="JSON file of per-model behaviour scripts")

    p_conv = sub.add_parser("convert", help="write the TOML layout from the original YAML layout")
    p_conv.add_argument("src", help="config root in the YAML layout")
    p_conv.add_argument("dst", help="directory to write the TOML layout into")

    args = parser.parse_args(argv)
    if args.command == "check":
        from ._check import main_check

        return main_check(args.dir)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.configs, args.requests)
    if args.command == "mock-server":
        from .testing import serve

        serve(args.host, args.port, args.script)
        return 0
    if args.command == "convert":
        from ._check import main_convert

        return main_convert(args.src, args.dst)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
