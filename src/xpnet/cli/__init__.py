"""The ``xpnet`` command: ``train`` (digits by default), ``predict``, ``export``, ``convert``, ``bench``, ``info``.

Modules: ``parser`` (flags), ``commands`` (what each subcommand does), ``config`` (the TOML schema),
``runs`` (one training run), ``deploy`` (predict, export, convert), ``rundir`` (run directories that
lose nothing), ``exit_codes``.
"""

from __future__ import annotations

import sys

from ..backend import DeviceUnavailableError
from . import commands, deploy, distrun
from .exit_codes import EXIT_DIVERGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .parser import build_parser

__all__ = ["EXIT_DIVERGED", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def main(argv=None) -> int:
    """The ``xpnet`` command; every error ends in one line on stderr and a non-zero exit code
    (``XPNET_TRACEBACK=1`` shows the traceback of unexpected ones)."""
    import os

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    command = {"train": commands.cmd_train, "bench": commands.cmd_bench, "export": deploy.cmd_export,
               "predict": deploy.cmd_predict, "convert": deploy.cmd_convert, "info": commands.cmd_info}[args.command]
    where = f"xpnet {args.command}"
    try:
        return distrun.guard(command, args)  # under mpiexec: an error on one rank aborts them all
    except KeyboardInterrupt as exc:
        print(f"{where}: {exc or 'interrupted.'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, DeviceUnavailableError) as exc:  # bad input: refused before anything changed
        print(f"{where}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(f"{where}: out of memory; use a smaller model, batch size or data set.", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"{where}: {_describe_os_error(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        if os.environ.get("XPNET_TRACEBACK"):
            raise
        print(f"{where}: {type(exc).__name__}: {exc} (set XPNET_TRACEBACK=1 to see where)", file=sys.stderr)
        return EXIT_FAILED


def _describe_os_error(exc: OSError) -> str:
    import errno

    name = f" {exc.filename}" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return (f"no space left on the device to write{name}; nothing half-written was kept. Free some space, "
                "then resume the run with xpnet train --resume RUN_DIR (or start it again).")
    return f"cannot access{name}: {exc.strerror or exc}"
