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
import traceback

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
    except Exception as e:
        # raised in the user's own code (an agent, reward or annotator given by spec): theirs to fix, exit 2 with
        # their frame named; raised in this package: a bug, with its traceback (exit 1)
        frame = user_frame(e)
        if frame is None or args.verbose:
            raise
        print(f"alpaca-farm {args.command}: error in your code at {frame.filename}:{frame.lineno} (in {frame.name}): "
              f"{type(e).__name__}: {e} (rerun with -v for the traceback)", file=sys.stderr)
        return 2


# third-party packages whose frames sit between the user's code and ours (they raise on what they are given)
_LIBRARIES = ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "tokenizers", "safetensors",
              "huggingface_hub", "numpy", "scipy", "sklearn", "pandas", "gymnasium", "yaml", "tqdm", "matplotlib",
              "sentence_transformers", "jinja2", "requests", "urllib3", "httpx", "openai", "filelock", "hypothesis",
              "_pytest", "pytest", "pluggy")


def user_frame(e: BaseException) -> "traceback.FrameSummary | None":
    """The innermost traceback frame outside this package, the standard library and the libraries it runs on, when
    that frame is deeper than every frame of this package: the error was raised in (or by what was called from) a
    user's code. None otherwise."""
    import sysconfig
    import traceback
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent
    stdlib = {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib")}
    found = None
    for frame in traceback.extract_tb(e.__traceback__):
        path = Path(frame.filename).resolve() if frame.filename and not frame.filename.startswith("<") else None
        if path is not None and package in path.parents:
            found = None  # ours again: a frame of ours deeper than the user's makes it ours
            continue
        if path is None:
            continue
        parts = set(path.parts)
        if (any(root in path.parents for root in stdlib) and "site-packages" not in parts) or any(
                lib in parts for lib in _LIBRARIES):
            continue
        found = frame
    return found


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, AlpacaFarmError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return str(e)

if __name__ == "__main__":
    sys.exit(main())
