"""scalelab: predict a language model's loss before training it."""

__version__ = "0.1.0"
