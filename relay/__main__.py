"""`python -m relay` and the `it-relay` console script."""

from relay import early_signals


def main() -> None:
    """Hold stop and reload signals first, then import the command line (seconds on a loaded machine)."""
    early_signals.hold()
    try:
        from relay.cli import main as cli_main

        cli_main()
    finally:
        # Whatever ended the command before it took them (--help, a usage error, a bad
        # configuration): a signal held meanwhile acts now. Nothing once the daemon adopted them.
        early_signals.release()


if __name__ == "__main__":
    main()
