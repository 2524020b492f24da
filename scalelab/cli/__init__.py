"""The ``scalelab`` command line: the typer app, one module per command group.

- :mod:`~scalelab.cli.common`: the workspace options and helper, one-line errors for bad input;
- :mod:`~scalelab.cli.train`: ``train`` and ``corpus``;
- :mod:`~scalelab.cli.rlhf`: ``rlhf STAGE``;
- :mod:`~scalelab.cli.sweep`: ``sweep run|worker|status``;
- :mod:`~scalelab.cli.fits`: ``fit``, ``predict`` and ``backtest`` (they read runs alike);
- :mod:`~scalelab.cli.dashboard`: ``dashboard``;
- :mod:`~scalelab.cli.ui`: ``ui`` (the MLflow UI).

Heavy libraries (torch, Lightning, MLflow, pandas, Optuna) are imported inside the commands
that need them: ``import lightning`` alone costs seconds, and ``--help`` or a prediction query
should not. Bad input ends with one line naming the field and exit code 2, never a traceback.
Library modules never import this package.

Help is click's plain layout (``rich_markup_mode=None``): it wraps paragraphs and long
defaults whole, and shows no type for a flag, where typer's Rich panels print ``<bool>`` for
every flag and cut long words with an ellipsis.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from scalelab.cli import dashboard, fits, rlhf, train, ui
from scalelab.cli.benchmark import app as benchmark_app
from scalelab.cli.sweep import app as sweep_app

app = typer.Typer(
    help="Train GPTs, sweep them, fit scaling laws and predict the loss of planned models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,
)


@app.callback()
def root(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Show the libraries' banners and known warnings (Lightning, MLflow, "
            "Optuna), which are hidden by default.",
        ),
    ] = False,
) -> None:
    """Options every command shares (the app's help text is the ``Typer``'s)."""
    from scalelab.quiet import VERBOSE_ENV, quiet_libraries

    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # worker processes inherit it
    quiet_libraries()


app.command(epilog=fits.FIT_EXAMPLE)(fits.fit)
app.command(epilog=fits.PREDICT_EXAMPLE)(fits.predict)
app.command(epilog=fits.BACKTEST_EXAMPLE)(fits.backtest)
app.command(epilog=dashboard.DASHBOARD_EXAMPLE)(dashboard.dashboard)
app.command(epilog=ui.UI_EXAMPLE)(ui.ui)
app.command(epilog=train.TRAIN_EXAMPLE)(train.train)
app.command(epilog=rlhf.RLHF_EXAMPLE)(rlhf.rlhf)
app.command(epilog=train.CORPUS_EXAMPLE)(train.corpus)
app.add_typer(sweep_app, name="sweep")
app.add_typer(benchmark_app, name="benchmark")


def main() -> None:
    """Console entry point."""
    app()
