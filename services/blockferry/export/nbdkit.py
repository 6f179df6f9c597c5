"""Run nbdkit with :mod:`blockferry.export.nbd_plugin` to serve one disk of a restore point.

The export is read-only and speaks fixed newstyle NBD (nbdkit's own). By default it
listens on a Unix socket, reachable only by whom the socket's mode lets in; on a TCP
address TLS is required and the client must present a certificate signed by the
export's CA (``--tls-verify-peer``), since anyone who connects can read the whole disk.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import site
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import blockferry
from blockferry.core.errors import ConfigError, SourceError
from blockferry.repository.keys import Secret

PLUGIN = Path(__file__).with_name("nbd_plugin.py")
READY_TIMEOUT_S = 60.0
TLS_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem")
LOG = "nbdkit.log"


@dataclass(frozen=True)
class ExportRequest:
    """What to serve and where."""

    repository: str
    """The repository's location (a path, ``s3://…``, ``smb://…``)."""
    restore_point: str
    disk: str
    socket: Path | None = None
    """A Unix socket (the default when ``listen`` is None)."""
    listen: tuple[str, int] | None = None
    """A TCP address, TLS only."""
    tls_certificates: Path | None = None
    """A directory holding ca-cert.pem, server-cert.pem and server-key.pem."""
    secret: Secret | None = None

    def uri(self) -> str:
        """The NBD URI clients connect to."""
        if self.listen is not None:
            host, port = self.listen
            host = f"[{host}]" if ":" in host else host
            return f"nbds://{host}:{port}/"
        return f"nbd+unix:///?socket={self.socket}"


def nbdkit_command(request: ExportRequest, pidfile: Path, secret_fd: int | None) -> list[str]:
    """The nbdkit command line serving ``request``.

    Raises:
        ConfigError: ``listen`` without TLS certificates, or nbdkit is not installed.
    """
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        raise ConfigError(
            "serving an export needs nbdkit and its Python plugin (Debian: apt-get install "
            "nbdkit nbdkit-plugin-python)"
        )
    command = [nbdkit, "--foreground", "--readonly", "--exit-with-parent", "-P", str(pidfile)]
    if request.listen is not None:
        certificates = request.tls_certificates
        if certificates is None:
            raise ConfigError("an export on a TCP address needs TLS: give its certificates")
        absent = [name for name in TLS_FILES if not (certificates / name).is_file()]
        if absent:
            raise ConfigError(f"the TLS directory {certificates} lacks {', '.join(absent)}")
        host, port = request.listen
        command += ["--ipaddr", host, "--port", str(port), "--tls=require"]
        command += [f"--tls-certificates={certificates}", "--tls-verify-peer"]
    else:
        command += ["--unix", str(request.socket)]
    command += ["python", str(PLUGIN)]
    command += [
        f"repository={request.repository}",
        f"restore_point={request.restore_point}",
        f"disk={request.disk}",
    ]
    if secret_fd is not None:
        command.append(f"secret_fd={secret_fd}")
    return command


def plugin_environment() -> dict[str, str]:
    """This process's environment, with the paths nbdkit's interpreter needs to import
    blockferry and its dependencies: this interpreter's site directories (not its
    standard library: nbdkit's interpreter has its own, of the same Python version)."""
    paths = [str(Path(blockferry.__file__).parent.parent)]
    paths += [path for path in site.getsitepackages() if Path(path).is_dir()]
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return environment


class Export:
    """nbdkit serving one export, started by :meth:`start`, ended by :meth:`stop`."""

    def __init__(self, request: ExportRequest, process: subprocess.Popen[bytes], work: Path):
        self.request = request
        self.process = process
        self._work = work

    @classmethod
    def start(cls, request: ExportRequest) -> Export:
        """Start serving; returns once clients can connect.

        Raises:
            ConfigError: see :func:`nbdkit_command`.
            SourceError: nbdkit stopped before it was ready (its message included).
        """
        if request.socket is not None and request.listen is None:
            _remove_stale_socket(request.socket)
        work = Path(tempfile.mkdtemp(prefix="blockferry-export-"))
        pidfile = work / "nbdkit.pid"
        read_fd = write_fd = None
        if request.secret is not None:
            read_fd, write_fd = os.pipe()
            document = {
                "kind": request.secret.kind,
                "material": base64.b64encode(request.secret.material).decode(),
            }
            os.write(write_fd, json.dumps(document).encode())
            os.close(write_fd)
        try:
            command = nbdkit_command(request, pidfile, read_fd)
            with open(work / LOG, "wb") as log:
                process = subprocess.Popen(
                    command,
                    env=plugin_environment(),
                    pass_fds=() if read_fd is None else (read_fd,),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            if read_fd is not None:
                os.close(read_fd)
        export = cls(request, process, work)
        export._wait_ready(pidfile)
        return export

    def _wait_ready(self, pidfile: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not pidfile.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                error = _plugin_error(self.stderr())
                self.stop()
                raise SourceError(
                    f"serving disk {self.request.disk} of restore point "
                    f"{self.request.restore_point}: {error}"
                )
            time.sleep(0.05)

    def stderr(self) -> str:
        """What nbdkit has written so far (its errors: a chunk it could not read)."""
        try:
            return (self._work / LOG).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait(self) -> int:
        """Block until nbdkit ends; its exit status."""
        return self.process.wait()

    def terminate(self) -> None:
        """Ask nbdkit to end (safe in a signal handler: it does not wait)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """End nbdkit (clients are disconnected; the pin is released) and clean up."""
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self._work, ignore_errors=True)
        if self.request.socket is not None and self.request.listen is None:
            self.request.socket.unlink(missing_ok=True)


def _remove_stale_socket(path: Path) -> None:
    """Remove the socket a killed export left at ``path``; one still served is refused.

    Raises:
        ConfigError: ``path`` is not a socket, or an export still listens there.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket: choose another --socket")
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)
            return
    raise ConfigError(f"something is serving on {path} already: choose another --socket")


def _plugin_error(stderr: str) -> str:
    """The last error line of nbdkit's output (a Python error's message), or all of it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error:" in line:
            return line.split("error: ", 1)[-1]
    return stderr.strip() or "nbdkit stopped"
