"""`--help` for console scripts."""
import sys

from absl import flags


def help_lists_flags_of(module_name: str) -> None:
    """Make absl's --help list the flags of `module_name`, the one whose main() runs.

    absl lists the key flags of the module sys.argv[0] names. Under `python -m` that is the runner
    itself; as an installed console script it is the wrapper, which defines none, and --help would
    list nothing."""
    if module_name == "__main__":
        return
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
