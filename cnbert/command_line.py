"""What every cnbert console script shares: flag errors reported as `<program>: error: ...` with
exit status 2, and a --help that lists the script's own flags."""
import sys
from collections.abc import Callable

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
        except flags.Error as e:
            print_usage_error(program, e)
        except (OSError, UnicodeDecodeError) as e:  # absl reads a flag file as UTF-8 text, and lets these out
            named = [arg.split("=", 1)[1] for arg in argv if arg.startswith(("--flagfile=", "-flagfile="))]
            print_usage_error(program, f"cannot read --flagfile={' / '.join(named)} as UTF-8 text: {e}")
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
