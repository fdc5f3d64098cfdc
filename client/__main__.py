"""``python -m client``: the client command line."""

from .app import main

main()
