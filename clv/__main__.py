"""`python -m clv` runs the command line."""

from clv.cli import main

main()
