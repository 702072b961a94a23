"""The relay cluster's coordination core: room leases, fencing and heartbeats on PostgreSQL.

Several relay nodes share one PostgreSQL database (the store's, see
:mod:`crdtsync.store.postgres`) and at any moment one node owns a room. This
package holds the parts that do not depend on how the relay serves
connections (``docs/CLUSTER.md`` has the whole design):

* :mod:`~crdtsync.relay.cluster.leases`: :class:`~crdtsync.relay.cluster.leases.Leases`
  (register a node, heartbeat, acquire and release rooms, in SQL transactions on
  the database's clock) and :class:`~crdtsync.relay.cluster.leases.LeaseFence`
  (the store's write fence: every write of a room checks its lease epoch in the
  write's own transaction);
* :mod:`~crdtsync.relay.cluster.heartbeat`: :class:`~crdtsync.relay.cluster.heartbeat.NodeLease`,
  the sans-I/O timer that says when to renew and when the node must stop
  believing it owns anything;
* :mod:`~crdtsync.relay.cluster.events`: lease changes announced with
  ``LISTEN``/``NOTIFY`` (small control messages only; documents never travel
  through them).

Needs the ``crdtsync[postgres]`` extra (psycopg 3), except ``heartbeat``.
"""
