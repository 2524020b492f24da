"""``python -m scalelab``: the same as the ``scalelab`` command."""

from scalelab.cli import main

if __name__ == "__main__":
    main()
