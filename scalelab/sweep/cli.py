"""``scalelab sweep ...`` commands."""

import typer

app = typer.Typer(help="Launch, join and inspect sweeps.", no_args_is_help=True)
