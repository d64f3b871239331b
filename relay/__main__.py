"""`python -m relay` and the `it-relay` console script."""

from relay import early_signals


def main() -> None:
    """Hold stop and reload signals first, then import the command line (seconds on a loaded machine)."""
    early_signals.hold()
    from relay.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
