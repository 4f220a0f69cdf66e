"""The ``graft`` command line."""

__all__ = ["main"]


def main() -> None:
    from graft.cli.main import main as _main

    _main()
