"""What every cnbert console script shares: flag errors reported as `<program>: error: ...` with
exit status 2, and a --help that lists the script's own flags."""
import os
import sys
from collections.abc import Callable
from pathlib import Path

from absl import app, flags

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130  # 130: 128 + SIGINT, as shells report Ctrl-C


def print_usage_error(program: str, error) -> None:
    print(f"{program}: error: {error}\n({program} --help lists the flags)", file=sys.stderr)


def run(program: str, main: Callable) -> None:
    """absl's app.run, with a flag it cannot parse (unknown, a bad value, an unreadable flag file)
    reported like any other usage error: `<program>: error: ...` and exit status 2."""

    def parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except SystemExit as e:
            # absl's --help, --helpshort, --helpfull and --helpxml print, then exit with 1: asking
            # for help is no error
            sys.exit(0 if e.code == 1 else e.code)
        except BrokenPipeError:
            # the help went to a pipe closed early (`--help | head`): stop quietly, as Python's docs advise
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_FAILED)
        except flags.Error as e:
            print_usage_error(program, e)
        except (OSError, UnicodeDecodeError) as e:  # absl reads a flag file as UTF-8 text, and lets these out
            path = _unreadable_flag_file(argv[1:])
            if path is None:  # not a flag file's fault
                raise
            print_usage_error(program, f"cannot read --flagfile={path} as UTF-8 text: {e}")
        sys.exit(EXIT_USAGE)

    _help_lists_flags_of(main.__module__)
    app.run(main, flags_parser=parse_flags)


def _help_lists_flags_of(module_name: str) -> None:
    """absl's --help lists the key flags of the module sys.argv[0] names. Under `python -m` that is
    the runner itself; as an installed console script it is the wrapper, which defines none, and
    --help would list nothing: give it the runner's."""
    if module_name == "__main__":
        return
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def _flag_files_named(args) -> list[str]:
    """The flag files among command-line arguments or flag-file lines: --flagfile=F or --flagfile F."""
    args = [arg.strip() for arg in args]
    named = []
    for i, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if name.lstrip("-") == "flagfile" and name.startswith("-"):
            if equals:
                named.append(value)
            elif i + 1 < len(args):
                named.append(args[i + 1])
    return named


def _unreadable_flag_file(args) -> str | None:
    """The first flag file, named on the command line or inside another flag file, that cannot be
    read as UTF-8 text."""
    pending, seen = _flag_files_named(args), set()
    while pending:
        path = pending.pop(0)
        if path in seen:
            continue
        seen.add(path)
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return path
        pending += _flag_files_named(text.splitlines())
    return None
