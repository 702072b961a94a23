"""``python -m crdtsync``: the same command as the ``crdtsync`` script."""

from crdtsync.cli import main

raise SystemExit(main())
