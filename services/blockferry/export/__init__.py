"""Instant recovery: a disk of a restore point served read-only over NBD by nbdkit, read
in place through a :class:`~blockferry.repository.disk_reader.DiskReader`."""
