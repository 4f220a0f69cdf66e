"""``python -m graft``: the command line, as torchrun starts it in each process (``-m graft``)."""

from graft.cli.main import main

if __name__ == "__main__":
    main()
