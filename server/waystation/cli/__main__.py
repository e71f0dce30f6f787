"""`python -m waystation.cli`."""

from waystation.cli import main

main()
