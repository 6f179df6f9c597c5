"""Two sites on this machine: an on-site and an off-site Kafka cluster (one node each),
Kafka's MirrorMaker 2 between them, and one TCP relay that all traffic between the
sites takes (the WAN link: it counts bytes each way, limits bandwidth, and can be cut).

MirrorMaker runs off-site, beside the repository, as it usually does: it reads the
on-site topics that cross, and writes the ones that come back, through the relay. The
on-site cluster's WAN listener is advertised at the relay's address, so a client that
bootstraps through the relay is sent through it for every broker too."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from blockferry.transport.sites import Placement, mirror_properties
from tests.kafka_cluster import KafkaCluster
from tests.system import free_port
from tests.tcp_relay import TcpRelay

MIRROR_SH = Path(__file__).resolve().parent.parent / "compose" / "local" / "mirror.sh"

ONSITE_ROLES = ("orchestrator", "guest-proxy", "source-mover", "dedupe-index")
"""Next to the production hosts."""

OFFSITE_ROLES = ("target-mover",)
"""Next to the repository."""

PLACEMENT = Placement({"onsite": ONSITE_ROLES, "offsite": OFFSITE_ROLES})


@dataclass
class Sites:
    onsite: str
    """The on-site cluster's bootstrap servers (its own roles' way in)."""
    offsite: str
    relay: TcpRelay
    """The WAN link."""
    mirror_dir: Path
    onsite_cluster: KafkaCluster

    def bootstrap_of(self, role: str) -> str:
        return self.offsite if PLACEMENT.site_of(role) == "offsite" else self.onsite

    def role_env(self) -> dict[str, dict[str, str]]:
        """Each role's cluster, as :class:`~tests.e2e.harness.MeshProcesses` takes it."""
        return {
            role: {"BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_of(role)}
            for role in (*ONSITE_ROLES, *OFFSITE_ROLES)
        }

    def stop_onsite(self) -> None:
        """The on-site cluster lost (a disaster at the production site)."""
        self.onsite_cluster.down()

    def mirror_log(self) -> str:
        log = self.mirror_dir / "logs" / "mirror.log"
        return log.read_text(errors="replace") if log.exists() else ""


def mirror_config(onsite: str, offsite: str, prefix: str) -> str:
    """MirrorMaker 2's mm2.properties: the two clusters (on-site through the relay), the
    topics of :data:`PLACEMENT`, and the rest sized for one node per site. Records
    cross as they are (chunks are compressed already): no recompression; no offset
    translation of groups (no role moves between clusters), no heartbeats."""
    return "\n".join(
        [
            "clusters=onsite,offsite",
            f"onsite.bootstrap.servers={onsite}",
            f"offsite.bootstrap.servers={offsite}",
            mirror_properties(PLACEMENT, prefix).strip(),
            "refresh.topics.interval.seconds=2",
            "sync.topic.configs.interval.seconds=10",
            "emit.heartbeats.enabled=false",
            "groups.exclude=.*",
            "sync.group.offsets.enabled=false",
            "offset-syncs.topic.location=target",
            "tasks.max=2",
            *(
                f"{name}={1}"
                for name in (
                    "replication.factor",
                    "offset-syncs.topic.replication.factor",
                    "checkpoints.topic.replication.factor",
                    "heartbeats.topic.replication.factor",
                    "config.storage.replication.factor",
                    "offset.storage.replication.factor",
                    "status.storage.replication.factor",
                )
            ),
            # records of up to 16 MiB (topics.MAX_RECORD_BYTES), as the roles send them
            *(
                f"{cluster}.{setting}"
                for cluster in ("onsite", "offsite")
                for setting in (
                    "producer.max.request.size=16777216",
                    "producer.linger.ms=5",
                    "producer.batch.size=1048576",
                    "consumer.max.partition.fetch.bytes=16777216",
                )
            ),
            "",
        ]
    )


@contextlib.contextmanager
def running_two_sites(workdir: Path, prefix: str) -> Iterator[Sites]:
    """Both clusters, the relay and MirrorMaker 2, until the block ends."""
    wan_port = free_port()
    relay = TcpRelay("127.0.0.1", wan_port)
    onsite = KafkaCluster(workdir / "kafka-onsite", wan=(wan_port, relay.address))
    offsite = KafkaCluster(workdir / "kafka-offsite")
    mirror_dir = workdir / "mirror"
    try:
        onsite_bootstrap = onsite.up()
        offsite_bootstrap = offsite.up()
        mirror_dir.mkdir(parents=True, exist_ok=True)
        config = mirror_dir / "mm2.properties"
        config.write_text(mirror_config(relay.address, offsite_bootstrap, prefix))
        subprocess.run(
            ["bash", str(MIRROR_SH), "up", "--config", str(config), "--data-dir", str(mirror_dir)],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,  # the first fetch of the jars
        )
        yield Sites(onsite_bootstrap, offsite_bootstrap, relay, mirror_dir, onsite)
    finally:
        subprocess.run(
            ["bash", str(MIRROR_SH), "down", "--data-dir", str(mirror_dir)],
            capture_output=True,
            timeout=120,
        )
        offsite.down()
        onsite.down()
        relay.close()
