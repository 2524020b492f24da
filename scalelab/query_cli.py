"""``scalelab fit|predict|backtest|dashboard|ui``: questions asked of fitted scaling laws."""

import typer


def register(app: typer.Typer) -> None:
    """Add the query commands to ``app``."""
