"""The collaborative-editing demo: ``crdtsync demo`` and the page the relay serves.

* :mod:`.http`: answers for ``GET /demo/...`` (the page, its script and styles), which
  the relay serves when :attr:`RelayConfig.demo <crdtsync.relay.config.RelayConfig.demo>`
  is set;
* :mod:`.command`: the ``crdtsync demo`` command;
* ``static/``: the built page (sources and build in ``apps/demo/web/`` of the repository).
"""
