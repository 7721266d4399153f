"""``python -m segkd.cli``: the same as the ``segkd`` console script."""
from segkd.cli import main

main()
