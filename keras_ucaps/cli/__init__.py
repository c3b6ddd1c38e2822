"""The ``keras-ucaps`` command line. One module per command; heavy imports
(TensorFlow, Keras, scipy) happen inside the commands, so ``--help`` is instant."""

from __future__ import annotations

import os
import sys

import click

# TensorFlow's C++ start-up notes (CPU features, absl) would precede our one-line errors: keep its warnings and
# errors only. A user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_ucaps import __version__
from keras_ucaps.cli.classes import classes_command
from keras_ucaps.cli.convert import convert
from keras_ucaps.cli.evaluate import evaluate
from keras_ucaps.cli.export import export
from keras_ucaps.cli.fit import fit
from keras_ucaps.cli.patches import patches
from keras_ucaps.cli.pick import pick
from keras_ucaps.cli.predict import predict
from keras_ucaps.cli.show import show
from keras_ucaps.cli.simulate import simulate
from keras_ucaps.cli.targets import targets


def use_jax_compilation_cache() -> None:
    """Under KERAS_BACKEND=jax, keep XLA's compiled programs between commands (JAX's persistent cache, in
    $XDG_CACHE_HOME/keras-ucaps/jax unless JAX_COMPILATION_CACHE_DIR names another folder): on a CPU, XLA
    compiles every weight initialiser and training step anew in each process, which costs a tiny model's
    `fit` half a minute before its first step; a resumed or repeated run then starts in seconds."""
    if os.environ.get("KERAS_BACKEND") != "jax" or "jax" in sys.modules:
        return
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(base, "keras-ucaps", "jax")
    # Each weight initialiser compiles in under a second, but a model has dozens of them: keep them all.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    try:
        os.makedirs(os.environ["JAX_COMPILATION_CACHE_DIR"], exist_ok=True)
    except OSError:  # a read-only home: no cache, everything else as before
        del os.environ["JAX_COMPILATION_CACHE_DIR"]


use_jax_compilation_cache()


class OneLineErrors(click.Group):
    """click's group, with its usage errors (a bad option value, a missing argument) as our own errors: one line,
    ``Error: ...``, exit status 2, instead of the usage, a hint and the error on three or more lines."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as err:  # a bare command: its help, as click shows it
            err.show()
            sys.exit(err.exit_code)
        except click.ClickException as err:
            click.echo("Error: " + " ".join(err.format_message().split()), err=True)
            sys.exit(err.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keras-ucaps")
def main():
    """Find and classify macromolecules in cryo-electron tomograms.

    Arrays are (z, y, x); coordinates are x, y, z in voxels unless a file
    format says Å; voxel sizes are in Å.
    """
    from keras_ucaps.cli.quiet import drop_tensorflow_startup_notes
    from keras_ucaps.io.atomic import remove_scratch_on_termination

    drop_tensorflow_startup_notes()
    # A polite kill (SIGTERM, as schedulers send) removes this process's scratch; outputs are never left half.
    remove_scratch_on_termination()


for command in (simulate, show, convert, targets, classes_command, patches, fit, predict, pick, evaluate,
                export):
    main.add_command(command)
