"""Sweeps: Optuna studies that train the GPT family across sizes and budgets."""
