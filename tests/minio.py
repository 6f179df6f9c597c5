"""A real MinIO server for tests: on 127.0.0.1, a free port, its data and log in a
directory of its own, root credentials of its own. Started as a child process and
stopped by its pid. The binary is built by ``compose/local/test-servers.sh fetch``
(``make test`` runs it)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from minio import MinioAdmin
from minio.credentials.providers import StaticProvider

from blockferry.repository.s3_storage import S3Credentials, S3Location, S3Storage
from tests.system import TOOLS_DIR, free_port, stop_process, unavailable

MINIO = TOOLS_DIR / "minio"
START_TIMEOUT_S = 30.0
START_ATTEMPTS = 3


@dataclass(frozen=True)
class MinioServer:
    endpoint: str
    """``http://127.0.0.1:PORT``."""
    access_key: str
    secret_key: str
    """The root user's credentials."""
    data_dir: Path
    log: Path

    def client(self) -> object:
        """A boto3 S3 client with the root credentials."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def credentials(self) -> S3Credentials:
        return S3Credentials(self.access_key, self.secret_key)

    def storage(self, bucket: str, prefix: str = "repo/") -> S3Storage:
        """The S3 backend on ``bucket``, with the root credentials."""
        return S3Storage(S3Location(bucket, prefix, self.endpoint), credentials=self.credentials())

    def env(self) -> dict[str, str]:
        """The environment that gives a process (boto3's credential chain) the root
        credentials."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def new_bucket(self, *, retention_days: int = 0) -> str:
        """A new empty bucket's name; with ``retention_days``, versioned with Object Lock
        and that default retention in governance mode (an immutable repository's)."""
        name = f"b{secrets.token_hex(6)}"
        client = self.client()
        client.create_bucket(  # type: ignore[attr-defined]
            Bucket=name, ObjectLockEnabledForBucket=bool(retention_days)
        )
        if retention_days:
            client.put_object_lock_configuration(  # type: ignore[attr-defined]
                Bucket=name,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": retention_days}},
                },
            )
        return name

    def add_user(self, policy: dict[str, object]) -> S3Credentials:
        """A new user allowed what the IAM ``policy`` document says, and its keys."""
        admin = MinioAdmin(
            endpoint=self.endpoint.removeprefix("http://"),
            credentials=StaticProvider(self.access_key, self.secret_key),
            secure=False,
        )
        name = f"u{secrets.token_hex(6)}"
        with tempfile.NamedTemporaryFile("w", suffix=".json") as document:
            json.dump(policy, document)
            document.flush()
            admin.policy_add(name, document.name)
        secret = secrets.token_hex(16)
        admin.user_add(name, secret)
        admin.attach_policy([name], user=name)
        return S3Credentials(name, secret)


def check_available() -> None:
    if not os.access(MINIO, os.X_OK):
        unavailable(
            f"{MINIO} is not built: run `bash compose/local/test-servers.sh fetch` (make test does)"
        )


@contextlib.contextmanager
def running_minio(directory: Path) -> Iterator[MinioServer]:
    """A MinIO server serving until the block ends, its files in ``directory``."""
    check_available()
    access_key = "blockferry-test"
    secret_key = secrets.token_hex(16)
    env = {
        **os.environ,
        "MINIO_ROOT_USER": access_key,
        "MINIO_ROOT_PASSWORD": secret_key,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
        "MINIO_CALLHOME_ENABLE": "off",
    }
    errors = []
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        data = directory / f"data-{attempt}"
        data.mkdir()
        log = directory / f"minio-{attempt}.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [str(MINIO), "server", str(data), "--quiet", "--address", f"127.0.0.1:{port}"],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
        endpoint = f"http://127.0.0.1:{port}"
        try:
            if _wait_ready(process, endpoint):
                yield MinioServer(endpoint, access_key, secret_key, data, log)
                return
            errors.append(f"attempt {attempt} (port {port}): {log.read_text()[-2000:]}")
        finally:
            stop_process(process)
    raise RuntimeError("could not start MinIO for the tests:\n" + "\n".join(errors))


def _wait_ready(process: subprocess.Popen[bytes], endpoint: str) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{endpoint}/minio/health/ready", timeout=2) as reply:
                if reply.status == 200:
                    return process.poll() is None
        time.sleep(0.1)
    return False
