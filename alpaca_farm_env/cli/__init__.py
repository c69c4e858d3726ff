"""``alpaca-farm`` command line. Each module in this package that defines ``add_parser(subparsers)`` adds one
subcommand; the parser sets ``func`` to the handler, which returns an exit code.

Exit codes: 0 success; 2 a user error (bad flag or input, a missing, unreadable or corrupt file, an API that refuses
the request), printed as one line naming the file, row or key; 1 a bug (with its traceback); 130 interrupted."""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from ..errors import AlpacaFarmError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alpaca-farm",
        description="AlpacaFarm as Gymnasium environments: data, simulated annotators, agents and the win-rate benchmark.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "add_parser"):
            module.add_parser(sub)
    return parser


def add_data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="local AlpacaFarm data directory (default: $ALPACA_FARM_DATA_DIR, else the Hugging Face hub)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (AlpacaFarmError, OSError) as e:
        # The package's own errors and the environment's (a path that is a file, a disk that is full) are the
        # user's to fix: one line, exit 2. Anything else is a bug in this package and keeps its traceback (exit 1).
        if args.verbose:
            raise
        print(f"alpaca-farm {args.command}: error: {_describe(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alpaca-farm {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, AlpacaFarmError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return str(e)

if __name__ == "__main__":
    sys.exit(main())
