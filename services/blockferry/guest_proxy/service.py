"""The guest-proxy role: application-aware processing and snapshots, on command.

Commands arrive on the guest-commands topic (key = session id, so one session's
commands reach one instance in order) and are answered on the guest-events topic:

- ``freeze``: run the job's pre-freeze script on a VM's guest (over SSH, or here), after
  starting the guest's own watchdog that thaws it when the freeze limit expires;
- ``thaw``: run the post-thaw script, once: a guest that the limit already thawed (by
  this proxy's timer, or by the guest's watchdog if this proxy had died) is not thawed
  again, and the answer says who thawed it and when;
- ``snapshot`` / ``delete-snapshot``: make and delete one disk's snapshot.

A script's exit code and output are answered, not judged: the job decides whether a
failed script is ignored, a warning, or fails the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from blockferry.command_server import CommandServer, Handler
from blockferry.core.errors import BlockferryError, GuestError
from blockferry.guest_proxy.commands import CommandResult
from blockferry.guest_proxy.guest import (
    ALREADY_THAWED,
    LocalShell,
    Shell,
    SshShell,
    freeze_command,
    thaw_command,
)
from blockferry.guest_proxy.metrics import GuestProxyMetrics
from blockferry.guest_proxy.settings import GuestProxySettings
from blockferry.guest_proxy.snapshots import create_snapshot, delete_snapshot
from blockferry.mesh import Mesh
from blockferry.transport import commands as cmd

log = logging.getLogger(__name__)

THAW_TIMEOUT_S = 300.0
"""The longest a post-thaw script may run when the thaw is not asked (the freeze limit
expired): a thaw command gives its own limit."""

FORGET_AFTER_S = 3600.0
"""How long a thaw made at the freeze limit is remembered for the late thaw command."""


@dataclass
class FrozenGuest:
    """A guest between its freeze and its thaw."""

    vm: str
    shell: Shell
    marker: str
    """Names the guest's freeze marker: the session and the VM."""
    post_thaw: str | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    thawed: cmd.GuestStep | None = None
    """The thaw's step once it ran (or was found done by the guest's watchdog)."""
    timer: asyncio.Task[None] | None = None


class GuestProxy:
    name = "guest-proxy"

    def __init__(self, settings: GuestProxySettings, registry: CollectorRegistry) -> None:
        self._mesh = Mesh(settings, self.name)
        self._commands = GuestCommands(self._mesh, settings, GuestProxyMetrics(registry))
        self.ready = False

    async def start(self) -> None:
        await self._mesh.start()
        await self._commands.start()

    async def run(self) -> None:
        self.ready = True
        await self._commands.run()

    async def stop(self) -> None:
        self.ready = False
        await self._commands.stop()
        await self._mesh.stop()


class GuestCommands(CommandServer):
    def __init__(
        self, mesh: Mesh, settings: GuestProxySettings, metrics: GuestProxyMetrics
    ) -> None:
        topics = mesh.topics
        super().__init__(
            mesh,
            "guest-commands",
            "guest-proxy",
            topics.guest_commands,
            topics.guest_events,
            lambda reason: metrics.commands_refused.labels(reason).inc(),
        )
        self._settings = settings
        self._metrics = metrics
        self._frozen: dict[str, FrozenGuest] = {}

    def handlers(self) -> list[Handler[Any, Any]]:
        return [
            Handler(cmd.FREEZE, self._freeze),
            Handler(cmd.THAW, self._thaw),
            Handler(cmd.SNAPSHOT, self._snapshot),
            Handler(cmd.DELETE_SNAPSHOT, self._delete_snapshot),
        ]

    def _allow_local(self, what: str) -> None:
        if not self._settings.guest_proxy.run_local_commands:
            raise GuestError(
                f"{what}: this guest-proxy runs no commands on its own host"
                " (set guest_proxy.run_local_commands to allow it)"
            )

    def _shell(self, access: cmd.GuestAccess) -> Shell:
        if access.connection == "local":
            self._allow_local("running a guest script locally")
            return LocalShell()
        if not access.host:
            raise GuestError("an ssh connection needs the guest's host")
        return SshShell(
            host=access.host,
            port=access.port,
            user=access.user,
            client_keys=self._settings.client_keys(),
            known_hosts=self._settings.known_hosts(),
            connect_timeout=self._settings.guest_proxy.connect_timeout_s,
        )

    async def _freeze(self, args: cmd.FreezeArguments, _: str) -> cmd.GuestStep:
        key = f"{args.session_id}.{args.vm}"
        limit = args.freeze_limit_s
        shell = self._shell(args.access)
        command = freeze_command(key, args.pre_freeze, args.post_thaw, limit)
        frozen = FrozenGuest(args.vm, shell, key, args.post_thaw)
        self._frozen[key] = frozen
        self._metrics.frozen.inc()
        frozen.timer = asyncio.create_task(self._thaw_at_limit(key, frozen, limit))
        try:
            result = await shell.run(command, timeout=limit)
        except GuestError:
            # nothing ran on a guest that could not be reached: there is nothing to thaw
            self._forget(key, frozen)
            self._metrics.steps.labels("freeze", "failed").inc()
            raise
        return self._step("freeze", args.vm, result)

    async def _thaw(self, args: cmd.ThawArguments, _: str) -> cmd.GuestStep:
        key = f"{args.session_id}.{args.vm}"
        frozen = self._frozen.get(key)
        if frozen is None:  # another instance froze it, or this one restarted since
            frozen = FrozenGuest(args.vm, self._shell(args.access), key, args.post_thaw)
        step = await self._thaw_once(frozen, by="thaw", timeout=args.timeout_s)
        self._forget(key, frozen)
        return step

    async def _thaw_at_limit(self, key: str, frozen: FrozenGuest, limit: float) -> None:
        await asyncio.sleep(limit)
        log.warning("guest %s: freeze limit of %.0f s expired; thawing it", key, limit)
        self._metrics.auto_thaws.inc()
        with contextlib.suppress(GuestError):
            await self._thaw_once(frozen, by="the freeze limit")
        asyncio.get_running_loop().call_later(FORGET_AFTER_S, self._forget, key, frozen)

    async def _thaw_once(
        self, frozen: FrozenGuest, by: str, timeout: float = THAW_TIMEOUT_S
    ) -> cmd.GuestStep:
        """Thaw a guest unless it was thawed already; the step says who thawed it."""
        async with frozen.lock:
            if frozen.thawed is None:
                if frozen.timer is not None and by == "thaw":
                    frozen.timer.cancel()
                result = await frozen.shell.run(
                    thaw_command(frozen.marker, frozen.post_thaw), timeout=timeout
                )
                step = self._step("thaw", frozen.vm, result)
                if result.exit_code == ALREADY_THAWED:
                    message = (
                        "the guest had thawed itself at its freeze limit (or the freeze"
                        " never began)"
                    )
                    step = step.model_copy(update={"message": message, "ok": True})
                elif by != "thaw":
                    step = step.model_copy(update={"message": f"thawed by the guest-proxy at {by}"})
                frozen.thawed = step
            return frozen.thawed

    def _forget(self, key: str, frozen: FrozenGuest) -> None:
        if self._frozen.get(key) is frozen:
            del self._frozen[key]
            self._metrics.frozen.dec()
        if frozen.timer is not None and frozen.timer is not asyncio.current_task():
            frozen.timer.cancel()

    async def _snapshot(self, args: cmd.SnapshotArguments, _: str) -> cmd.SnapshotTaken:
        if args.provider == "command":
            self._allow_local("running a snapshot command")
        started = time.monotonic()
        try:
            snapshot = await create_snapshot(
                args.provider,
                args.disk,
                args.source,
                args.session_id,
                create=args.create,
                timeout_s=args.timeout_s,
                freeze_limit_s=args.freeze_limit_s,
            )
        except BlockferryError:
            self._metrics.steps.labels("snapshot", "failed").inc()
            raise
        self._metrics.steps.labels("snapshot", "ok").inc()
        return cmd.SnapshotTaken(
            path=snapshot.path,
            kind=snapshot.kind,
            warnings=list(snapshot.warnings),
            seconds=round(time.monotonic() - started, 3),
        )

    async def _delete_snapshot(self, args: cmd.DeleteSnapshotArguments, _: str) -> cmd.Done:
        if args.provider == "command":
            self._allow_local("running a snapshot command")
        try:
            await delete_snapshot(
                args.disk,
                args.source,
                args.path,
                provider=args.provider,
                session_id=args.session_id,
                delete=args.delete,
                timeout_s=args.timeout_s,
            )
        except BlockferryError:
            self._metrics.steps.labels("delete-snapshot", "failed").inc()
            raise
        self._metrics.steps.labels("delete-snapshot", "ok").inc()
        return cmd.Done()

    def _step(self, action: str, vm: str, result: CommandResult) -> cmd.GuestStep:
        self._metrics.steps.labels(action, "ok" if result.ok else "failed").inc()
        return cmd.GuestStep(
            vm=vm,
            action=action,
            ok=result.ok,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            seconds=round(result.seconds, 3),
            stdout=result.stdout,
            stderr=result.stderr,
            message=result.describe(),
        )
