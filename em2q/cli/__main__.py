"""``python -m em2q.cli``: the same as the ``em2q`` command."""

from em2q.cli import main

main()
