"""blockferry: block-level backup of virtual machines and volumes over Apache Kafka."""

__version__ = "0.1.0"
