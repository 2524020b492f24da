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
"""

from __future__ import annotations

import typer

from scalelab.cli import dashboard, fits, rlhf, train, ui
from scalelab.cli.sweep import app as sweep_app

app = typer.Typer(
    help="Train GPTs, sweep them, fit scaling laws and predict the loss of planned models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.command(epilog=fits.FIT_EXAMPLE)(fits.fit)
app.command(epilog=fits.PREDICT_EXAMPLE)(fits.predict)
app.command(epilog=fits.BACKTEST_EXAMPLE)(fits.backtest)
app.command(epilog=dashboard.DASHBOARD_EXAMPLE)(dashboard.dashboard)
app.command(epilog=ui.UI_EXAMPLE)(ui.ui)
app.command(epilog=train.TRAIN_EXAMPLE)(train.train)
app.command(epilog=rlhf.RLHF_EXAMPLE)(rlhf.rlhf)
app.command(epilog=train.CORPUS_EXAMPLE)(train.corpus)
app.add_typer(sweep_app, name="sweep")


def main() -> None:
    """Console entry point."""
    app()
