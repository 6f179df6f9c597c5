"""File-level restore: the files of a backed-up disk, browsed, read and restored without
restoring the disk, through a :class:`~blockferry.repository.disk_reader.DiskReader`."""
