"""The ``hwsim`` command line: thin click commands over the library.

Each command parses its options, calls one library function and prints. Every
:class:`~hwsim.errors.HwsimError` (and click's own usage errors) becomes one line on stderr
and a non-zero exit code; Ctrl-C becomes "interrupted" and exit code 130.
"""

from hwsim.cli import commands, diagnose, study  # noqa: F401 (registers the commands, in this order)
from hwsim.cli.group import cli
from hwsim.util.memory import keep_freed_memory


def main() -> None:
    keep_freed_memory()  # freed feature maps are reused, not mapped afresh (HWSIM_MALLOC)
    cli()


__all__ = ["cli", "main"]
