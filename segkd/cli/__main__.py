"""``python -m segkd.cli``: the same as the ``segkd`` console script."""
from . import main

main()
