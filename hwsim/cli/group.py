"""The ``hwsim`` command group and its error handling.

Each command parses its options, calls one library function and prints. Every
:class:`~hwsim.errors.HwsimError` (and click's own usage errors) becomes one line on stderr
and a non-zero exit code; Ctrl-C becomes "interrupted" and exit code 130.
"""

from __future__ import annotations

import sys

import click

from hwsim import __version__
from hwsim.errors import HwsimError
from hwsim.validate import SettingError


class HwsimGroup(click.Group):
    """A click group that reports errors in one line instead of a traceback or usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            _fail("interrupted", 130)
        except click.ClickException as e:
            hint = ""
            if isinstance(e, click.UsageError) and e.ctx is not None:
                hint = f" (see '{e.ctx.command_path} --help')"
            _fail(e.format_message() + hint, e.exit_code)
        except SettingError as e:  # the library names the setting; here it is an option
            _fail(f"--{e.setting.replace('_', '-')}: {e.reason}", e.exit_code)
        except HwsimError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(cls=HwsimGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwsim")
def cli() -> None:
    """hwsim: how much accuracy a trained CNN loses on analog in-memory hardware,
    with and without BatchNorm."""
