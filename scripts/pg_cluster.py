#!/usr/bin/env python3
"""Start or stop a throwaway PostgreSQL server in a directory, for manual runs.

Usage::

    scripts/pg_cluster.py start DIR     # initdb (first time) and start; prints the DSN
    scripts/pg_cluster.py stop DIR      # stop it and remove DIR
    scripts/pg_cluster.py stop --keep DIR   # stop it, keep the data

Debian's server programs (``pg_config --bindir``, else /usr/lib/postgresql/*/bin)
run as the ``postgres`` user when this runs as root (PostgreSQL refuses root),
on a free port of 127.0.0.1, with the unix socket inside DIR. The DSN is also
written to DIR/dsn. Every directory above DIR must be searchable by the
``postgres`` user (/tmp is; a home directory may not be).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.postgres import PgServer, PgUnavailable


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--keep", action="store_true", help="stop: keep the data directory")
    ap.add_argument("--port", type=int, help="start: the port (default: a free one)")
    args = ap.parse_args(argv)
    root: Path = args.dir.resolve()
    try:
        server = PgServer(root)
    except PgUnavailable as exc:
        print(f"pg_cluster: {exc}", file=sys.stderr)
        return 1
    if args.action == "start":
        port_file = root / "port"
        port = args.port or (int(port_file.read_text()) if port_file.is_file() else None)
        try:
            server.start(port)
            if not _has_db(server):
                server.create_database("crdtsync")
        except RuntimeError as exc:
            print(f"pg_cluster: {exc}", file=sys.stderr)
            return 1
        dsn = server.dsn("crdtsync")
        port_file.write_text(str(server.port))
        (root / "dsn").write_text(dsn + "\n")
        print(dsn)
        return 0
    port_file = root / "port"
    if not port_file.is_file():
        print(f"pg_cluster: no server started in {root}", file=sys.stderr)
        return 1
    server.port = int(port_file.read_text())
    server.running = True
    try:
        server.stop()
    except RuntimeError as exc:
        print(f"pg_cluster: {exc}", file=sys.stderr)
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


def _has_db(server: PgServer) -> bool:
    return server.psql("SELECT 1 FROM pg_database WHERE datname = 'crdtsync'") == "1"


if __name__ == "__main__":
    sys.exit(main())
