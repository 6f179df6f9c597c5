"""``run`` and ``config``: the roles of this process and their settings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from blockferry.cli import main
from blockferry.cli.output import fail
from blockferry.core.errors import BlockferryError

if TYPE_CHECKING:
    from blockferry.transport.sites import Placement

F = TypeVar("F", bound=Callable[..., Any])

site_option = click.option(
    "--site",
    "sites",
    multiple=True,
    metavar="NAME=ROLE,ROLE…",
    help="A site and the roles placed there (twice: the two sites).",
)

principal_option = click.option(
    "--principal",
    default=None,
    help="The principal of each role, {role} replaced by its name (default"
    " User:blockferry-{role}; MirrorMaker 2's: {role}=mirror-maker).",
)


def served_options(command: F) -> F:
    """``--repository`` and ``--gateway-repository``: the repositories each owner serves."""
    for flag, dest, role in (
        ("--gateway-repository", "gateway_repositories", "gateway"),
        ("--repository", "repositories", "target mover"),
    ):
        command = click.option(
            flag,
            dest,
            multiple=True,
            help=f"A repository the {role} serves (repeat for each): the roles are granted"
            f" its topics, and on two sites they are placed on the {role}'s.",
        )(command)
    return command


def format_option(help_text: str) -> Callable[[F], F]:
    """``--format commands|json``, saying what each prints."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["commands", "json"]),
        default="commands",
        show_default=True,
        help=help_text,
    )


@main.command()
@click.argument("roles", nargs=-1, required=True)
def run(roles: tuple[str, ...]) -> None:
    """Run ROLES (orchestrator, guest-proxy, source-mover, dedupe-index, target-mover,
    gateway) in this process; all: every role but the gateway."""
    from blockferry import failpoints
    from blockferry.roles import resolve
    from blockferry.runner import run_roles
    from blockferry.settings import CommonSettings

    try:
        names = resolve(roles)
    except ValueError as exc:
        fail(str(exc))
    common = CommonSettings()
    failpoints.arm(common.failpoints, common.failpoint_log)
    try:
        asyncio.run(run_roles(names))
    except BlockferryError as exc:
        fail(str(exc))


@main.command()
@click.argument("roles", nargs=-1)
@click.option("--print-defaults", is_flag=True, help="The defaults, ignoring env and files.")
@click.option(
    "--check",
    is_flag=True,
    help="Print nothing; fail on a setting of ROLES that does not hold, and on a key of"
    " BLOCKFERRY_CONFIG_FILE or a BLOCKFERRY_ variable that no role reads.",
)
def config(roles: tuple[str, ...], print_defaults: bool, check: bool) -> None:
    """Print the settings of ROLES (default: all) as YAML: the effective ones, from the
    environment and BLOCKFERRY_CONFIG_FILE, or with --print-defaults the defaults."""
    import yaml
    from pydantic import ValidationError

    from blockferry.roles import ROLES, resolve

    try:
        names = resolve(roles or ("all",))
    except ValueError as exc:
        fail(str(exc))
    merged: dict[str, Any] = {}
    for name in names:
        model = ROLES[name].settings
        try:
            settings = model.model_construct() if print_defaults else model()
        except ValidationError as exc:
            fail(f"the settings of the {name}: {exc}")
        merged.update(settings.model_dump(mode="json", exclude={"instance"}))
    if check:
        _check_settings()
    else:
        click.echo(yaml.safe_dump(merged, sort_keys=True), nl=False)


def _check_settings() -> None:
    """Fail on what no role reads, of the configuration file and the environment."""
    import os

    import yaml

    from blockferry.roles import ROLES
    from blockferry.settings_check import settings_tree, unknown_keys, unknown_variables

    tree = settings_tree(spec.settings for spec in ROLES.values())
    problems = [f"{name}: no role reads it" for name in unknown_variables(tree, os.environ)]
    config_file = os.environ.get("BLOCKFERRY_CONFIG_FILE")
    if config_file:
        with open(config_file, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        problems += [f"{config_file}: {key}: no role reads it" for key in unknown_keys(tree, data)]
    if problems:
        fail("\n".join(problems))


@main.command()
@served_options
@click.option(
    "--prefix",
    default=None,
    help="The topic prefix (default: the settings' kafka.topic_prefix).",
)
@principal_option
@format_option(
    "kafka-acls.sh command lines (the broker in $KAFKA, the admin's client settings"
    " in $ADMIN_CONFIG), or JSON per principal in a KafkaUser's acls layout."
)
@click.option(
    "--apply",
    "apply_them",
    is_flag=True,
    help="Add them to the cluster of the settings (BLOCKFERRY_KAFKA__*), whose principal"
    " must be allowed to alter ACLs, instead of printing them.",
)
@site_option
@click.option(
    "--on",
    "on_site",
    default=None,
    metavar="SITE",
    help="With --site: the ACLs of this site's cluster (its roles', MirrorMaker 2's as"
    " {role}=mirror-maker, and the orchestrator's on MirrorMaker's heartbeats).",
)
def acls(
    repositories: tuple[str, ...],
    gateway_repositories: tuple[str, ...],
    prefix: str | None,
    principal: str | None,
    fmt: str,
    apply_them: bool,
    sites: tuple[str, ...],
    on_site: str | None,
) -> None:
    """Print (or apply) the Kafka ACLs of the mesh: each role's principal may write what
    it produces, read what it consumes and join its own consumer groups, on the shared
    topics and those of the repositories named; nothing else. On two sites (--site
    twice, --on one of them), those of one site's cluster."""
    from blockferry.settings import CommonSettings
    from blockferry.transport import acls as kafka_acls

    try:
        principal_of = kafka_acls.principal_template(principal or kafka_acls.DEFAULT_PRINCIPAL)
    except ValueError as exc:
        fail(str(exc))
    kafka = CommonSettings().kafka
    if bool(sites) != bool(on_site):
        fail("--site and --on go together: the two sites, and the one whose cluster it is")
    if sites:
        try:
            placement = _placement(sites, repositories, gateway_repositories)
            if on_site not in placement.sites:
                fail(f"--on {on_site}: not one of the sites {', '.join(placement.sites)}")
        except BlockferryError as exc:
            fail(str(exc))
        found = kafka_acls.site_bindings(
            prefix or kafka.topic_prefix,
            repositories,
            principal_of,
            placement,
            on_site,
            gateway_repositories,
        )
    else:
        found = kafka_acls.bindings(
            prefix or kafka.topic_prefix, repositories, principal_of, gateway_repositories
        )
    if apply_them:
        try:
            kafka_acls.apply(kafka.bootstrap_servers, kafka.security, found)
        except BlockferryError as exc:
            fail(str(exc))
        click.echo(f"{len(found)} ACLs on {kafka.bootstrap_servers}", err=True)
    elif fmt == "json":
        click.echo(kafka_acls.acl_document(found))
    else:
        click.echo("\n".join(kafka_acls.acl_commands(found)))


@main.command("mirror-config")
@site_option
@served_options
@click.option(
    "--prefix",
    default=None,
    help="The topic prefix (default: the settings' kafka.topic_prefix).",
)
@click.option(
    "--table",
    is_flag=True,
    help="Print the table of topics, the site that produces each and where it is mirrored instead.",
)
def mirror_config(
    sites: tuple[str, ...],
    repositories: tuple[str, ...],
    gateway_repositories: tuple[str, ...],
    prefix: str | None,
    table: bool,
) -> None:
    """Print the topic lines of MirrorMaker 2's mm2.properties for two sites (cluster
    aliases: the site names): each topic mirrored from the site that produces it to the
    other where a role reads it there, names unchanged. Add each cluster's
    bootstrap.servers and client settings. Where the target mover and the gateway run on
    different sites, name the repositories each serves: each crosses on its own."""
    from blockferry.settings import CommonSettings
    from blockferry.transport.sites import mirror_properties, sites_table

    try:
        placement = _placement(sites, repositories, gateway_repositories)
        click.echo(
            sites_table(placement)
            if table
            else mirror_properties(placement, prefix or CommonSettings().kafka.topic_prefix),
            nl=table,
        )
    except BlockferryError as exc:
        fail(str(exc))


class _Rate(click.ParamType[int]):
    """A rate in bytes a second, written as a size: ``10MiB``, ``800KB``, ``1000000``."""

    name = "rate"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from pydantic import ByteSize, TypeAdapter, ValidationError

        try:
            return int(TypeAdapter(ByteSize).validate_python(value))
        except ValidationError:
            self.fail(f"{value!r} is not a size a second such as 10MiB or 800KB", param, ctx)


@main.command("link-limit")
@click.option(
    "--rate",
    type=_Rate(),
    required=True,
    help="The link's rate a second out of the remote site (10MiB, 800KB): what MirrorMaker"
    " 2 fetches there.",
)
@click.option(
    "--back-rate",
    type=_Rate(),
    default=None,
    help="The rate a second into the remote site, what MirrorMaker 2 produces there"
    " (default: --rate).",
)
@click.option(
    "--brokers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="The remote cluster's brokers: Kafka holds each to its share of the rates.",
)
@principal_option
@format_option(
    "A kafka-configs.sh command line (the broker in $KAFKA, the admin's client"
    " settings in $ADMIN_CONFIG), or JSON in a KafkaUser's quotas layout."
)
def link_limit(
    rate: int, back_rate: int | None, brokers: int, principal: str | None, fmt: str
) -> None:
    """Print the broker quotas that hold the link between two sites to a rate: on the
    remote cluster, the one MirrorMaker 2 reaches over the link, its principal may fetch
    RATE a second (the topics that leave that site) and produce BACK-RATE (those that
    arrive). MirrorMaker has no rate setting of its own; the brokers slow its requests."""
    from blockferry.transport import acls as kafka_acls
    from blockferry.transport.link_limit import LinkLimit, quota_command, quota_document

    try:
        principal_of = kafka_acls.principal_template(principal or kafka_acls.DEFAULT_PRINCIPAL)
        limit = LinkLimit(rate, rate if back_rate is None else back_rate, brokers)
        mirror_maker = principal_of(kafka_acls.MIRROR_MAKER)
        click.echo(
            quota_command(mirror_maker, limit)
            if fmt == "commands"
            else quota_document(mirror_maker, limit)
        )
    except (ValueError, BlockferryError) as exc:
        fail(str(exc))


def _placement(
    sites: tuple[str, ...],
    repositories: tuple[str, ...] = (),
    gateway_repositories: tuple[str, ...] = (),
) -> Placement:
    """The placement ``--site NAME=ROLE,ROLE…`` options give, each repository on the
    site of its owner where the target mover and the gateway run on different sites."""
    from blockferry.transport.sites import place_repositories

    placed: dict[str, tuple[str, ...]] = {}
    for site in sites:
        name, _, roles = site.partition("=")
        placed[name] = tuple(role for role in roles.split(",") if role)
    return place_repositories(placed, repositories, gateway_repositories)
