"""Two sites on this machine: an on-site and an off-site Kafka cluster (one node each),
Kafka's MirrorMaker 2 between them, and one TCP relay that all traffic between the
sites takes (the WAN link: it counts bytes each way, limits bandwidth, and can be cut).

MirrorMaker runs off-site, beside the repository, as it usually does: it reads the
on-site topics that cross, and writes the ones that come back, through the relay. The
on-site cluster's WAN listener is advertised at the relay's address, so a client that
bootstraps through the relay is sent through it for every broker too."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from blockferry.transport.acls import MIRROR_MAKER
from blockferry.transport.sites import Placement, mirror_properties, place_repositories
from tests.e2e.harness import MeshProcesses
from tests.kafka_cluster import KafkaCluster
from tests.system import free_port, signal_and_wait
from tests.tcp_relay import TcpRelay

MIRROR_SH = Path(__file__).resolve().parent.parent / "compose" / "local" / "mirror.sh"

ONSITE_ROLES = ("orchestrator", "guest-proxy", "source-mover", "dedupe-index")
"""Next to the production hosts."""

OFFSITE_ROLES = ("target-mover",)
"""Next to the repository."""

PLACEMENT = Placement({"onsite": ONSITE_ROLES, "offsite": OFFSITE_ROLES})
"""The repositories off-site."""


@dataclass(frozen=True)
class Repositories:
    """The repositories each owner serves (for ACLs, and for a placement with the owners
    on both sites)."""

    target_mover: tuple[str, ...] = ("default",)
    gateway: tuple[str, ...] = ()

    def options(self) -> list[str]:
        """As ``blockferry acls`` and ``mirror-config`` take them."""
        return [
            *(f"--repository={name}" for name in self.target_mover),
            *(f"--gateway-repository={name}" for name in self.gateway),
        ]


@dataclass
class Sites:
    onsite: str
    """The on-site cluster's bootstrap servers (its own roles' way in)."""
    offsite: str
    relay: TcpRelay
    """The WAN link."""
    mirror_dir: Path
    onsite_cluster: KafkaCluster
    offsite_cluster: KafkaCluster
    placement: Placement = PLACEMENT

    def bootstrap_of(self, role: str) -> str:
        return self.offsite if self.placement.site_of(role) == "offsite" else self.onsite

    def cluster_of(self, role: str) -> KafkaCluster:
        offsite = self.placement.site_of(role) == "offsite"
        return self.offsite_cluster if offsite else self.onsite_cluster

    def role_env(self) -> dict[str, dict[str, str]]:
        """Each role's cluster and its credentials there, as
        :class:`~tests.e2e.harness.MeshProcesses` takes them."""
        return {
            role: {
                "BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_of(role),
                **self._credentials(self.cluster_of(role)),
            }
            for roles in self.placement.sites.values()
            for role in roles
        }

    def offsite_env(self) -> dict[str, str]:
        """What a role started off-site instead needs (the off-site take-over)."""
        return {
            "BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS": self.offsite,
            **self._credentials(self.offsite_cluster),
        }

    @staticmethod
    def _credentials(cluster: KafkaCluster) -> dict[str, str]:
        return cluster.client_env() if cluster.security == "sasl_ssl" else {}

    def limit_link(self, rate: int) -> None:
        """Hold the link to ``rate`` bytes a second each way as an operator does: the
        quota ``blockferry link-limit`` prints, set on the cluster MirrorMaker reaches
        over the link (on-site)."""
        line = subprocess.run(
            [sys.executable, "-m", "blockferry.cli", "link-limit", "--rate", str(rate)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        self.onsite_cluster.admin_command(line)

    def start_mirror(self) -> None:
        """Start MirrorMaker 2 with its ``mm2.properties`` (unless it runs)."""
        config, data = self.mirror_dir / "mm2.properties", self.mirror_dir
        subprocess.run(
            ["bash", str(MIRROR_SH), "up", "--config", str(config), "--data-dir", str(data)],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,  # the first fetch of the jars
        )

    def kill_mirror(self) -> None:
        """SIGKILL MirrorMaker 2 (its host lost) and wait until it is gone."""
        signal_and_wait(int((self.mirror_dir / "mirror.pid").read_text()), signal.SIGKILL, 30)

    def stop_onsite(self) -> None:
        """The on-site cluster lost (a disaster at the production site)."""
        self.onsite_cluster.down()

    def wait_until_known(self, mesh: MeshProcesses, *names: str, timeout: float = 120.0) -> None:
        """Wait until the on-site orchestrator knows the repositories ``names`` (default:
        ``default``) the owners announced: an off-site one's announcement crosses the
        link first."""
        deadline = time.monotonic() + timeout
        while not set(names or ["default"]) <= set(mesh.api("GET", "/api/v1/repositories").json()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no announcement crossed in {timeout:.0f} s")
            time.sleep(0.5)

    def mirror_log(self) -> str:
        log = self.mirror_dir / "logs" / "mirror.log"
        return log.read_text(errors="replace") if log.exists() else ""


def _client_settings(alias: str, cluster: KafkaCluster) -> list[str]:
    """MirrorMaker's settings to reach ``cluster`` as its own SCRAM user."""
    if cluster.security != "sasl_ssl":
        return []
    security = cluster.data_dir / "security"
    password = (security / f"blockferry-{MIRROR_MAKER}.password").read_text().strip()
    return [
        f"{alias}.security.protocol=SASL_SSL",
        f"{alias}.sasl.mechanism=SCRAM-SHA-512",
        f"{alias}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule"
        f' required username="blockferry-{MIRROR_MAKER}" password="{password}";',
        f"{alias}.ssl.truststore.type=PEM",
        f"{alias}.ssl.truststore.location={security / 'ca.crt'}",
    ]


def mirror_config(
    onsite: str,
    offsite: str,
    prefix: str,
    clients: Sequence[str] = (),
    placement: Placement = PLACEMENT,
) -> str:
    """MirrorMaker 2's mm2.properties: the two clusters (on-site through the relay), the
    topics of ``placement``, and the rest sized for one node per site. Records
    cross as they are (chunks are compressed already): no recompression; no offset
    translation of groups (no role moves between clusters). Heartbeats on (a second
    each): the on-site orchestrator watches them to say when the link is down."""
    return "\n".join(
        [
            "clusters=onsite,offsite",
            f"onsite.bootstrap.servers={onsite}",
            f"offsite.bootstrap.servers={offsite}",
            *clients,
            mirror_properties(placement, prefix).strip(),
            "refresh.topics.interval.seconds=2",
            "sync.topic.configs.interval.seconds=10",
            "groups.exclude=.*",
            "sync.group.offsets.enabled=false",
            "offset-syncs.topic.location=target",
            "tasks.max=2",
            # the worker of the flow into on-site loses its group when the link is cut;
            # with one MirrorMaker it comes back as a new member, whose tasks would wait
            # out the 5 min held for the old one: give them back at once (a worker's
            # settings are those of its target cluster)
            *(f"{cluster}.scheduled.rebalance.max.delay.ms=0" for cluster in ("onsite", "offsite")),
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
                    # a send waits out a cut link however long: a failed one would stop
                    # MirrorMaker's task until restarted by hand
                    "producer.delivery.timeout.ms=2147483647",
                    "producer.linger.ms=5",
                    "producer.batch.size=1048576",
                    "consumer.max.partition.fetch.bytes=16777216",
                )
            ),
            "",
        ]
    )


def _apply_acls(
    cluster: KafkaCluster,
    site: str,
    prefix: str,
    placement: Placement,
    repositories: Repositories,
) -> None:
    """The ACLs of ``site``'s cluster, added as its admin."""
    placed = [f"--site={name}={','.join(roles)}" for name, roles in placement.sites.items()]
    cluster.apply_acls(prefix, *repositories.options(), *placed, f"--on={site}")


@contextlib.contextmanager
def running_two_sites(
    workdir: Path,
    prefix: str,
    security: str = "plaintext",
    roles: dict[str, tuple[str, ...]] = PLACEMENT.sites,
    repositories: Repositories = Repositories(),
) -> Iterator[Sites]:
    """Both clusters, the relay and MirrorMaker 2 for ``roles`` on the sites and the
    repositories their owners serve, until the block ends. With ``security`` sasl_ssl,
    each cluster has its own CA and users, and grants each role and MirrorMaker only
    what ``blockferry acls`` gives them."""
    placement = place_repositories(roles, repositories.target_mover, repositories.gateway)
    wan_port = free_port()
    relay = TcpRelay("127.0.0.1", wan_port)
    onsite = KafkaCluster(
        workdir / "kafka-onsite", security=security, wan=(wan_port, relay.address)
    )
    offsite = KafkaCluster(workdir / "kafka-offsite", security=security)
    mirror_dir = workdir / "mirror"
    try:
        onsite_bootstrap = onsite.up()
        offsite_bootstrap = offsite.up()
        clients = _client_settings("onsite", onsite) + _client_settings("offsite", offsite)
        if security == "sasl_ssl":
            _apply_acls(onsite, "onsite", prefix, placement, repositories)
            _apply_acls(offsite, "offsite", prefix, placement, repositories)
        mirror_dir.mkdir(parents=True, exist_ok=True)
        config = mirror_dir / "mm2.properties"
        config.write_text(
            mirror_config(relay.address, offsite_bootstrap, prefix, clients, placement)
        )
        config.chmod(0o600)  # it holds MirrorMaker's passwords
        sites = Sites(
            onsite_bootstrap, offsite_bootstrap, relay, mirror_dir, onsite, offsite, placement
        )
        sites.start_mirror()
        yield sites
    finally:
        subprocess.run(
            ["bash", str(MIRROR_SH), "down", "--data-dir", str(mirror_dir)],
            capture_output=True,
            timeout=120,
        )
        offsite.down()
        onsite.down()
        relay.close()


@contextlib.contextmanager
def running_direct(workdir: Path) -> Iterator[Sites]:
    """The simpler mode, to measure the mirror against: one cluster, on-site, which the
    off-site roles reach directly through the relay (its WAN listener); no MirrorMaker."""
    wan_port = free_port()
    relay = TcpRelay("127.0.0.1", wan_port)
    onsite = KafkaCluster(workdir / "kafka-onsite", wan=(wan_port, relay.address))
    try:
        bootstrap = onsite.up()
        yield Sites(bootstrap, relay.address, relay, workdir / "no-mirror", onsite, onsite)
    finally:
        onsite.down()
        relay.close()
