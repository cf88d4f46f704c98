"""A run worker's process (started by ``em2q_assets.run_launcher.WarmRunLauncher``).

Its own small module so that a Ctrl-C of the whole platform, which reaches every process of
``dagster dev``'s group, ends a spare quietly while it still imports Dagster or waits for a
run, instead of printing a traceback into the platform's log. A run in hand handles the
interrupt itself (Dagster's interrupt handlers end it CANCELED).
"""

import sys


def main() -> None:
    try:
        from em2q_assets.run_launcher import main as serve_runs

        serve_runs(sys.argv[1:])
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
