"""Write what observability/ generates into the chart, which compose mounts too: the
dashboards (``charts/blockferry/files/dashboards/<name>.json``, each checked against the
SDK's schema first) and the alert rules (``charts/blockferry/files/alerts.yaml``).

    python -m observability.generate           write them
    python -m observability.generate --check   write nothing; exit 1 naming each shipped
                                               file that is not what the code makes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from observability.alerts import RULES_FILE, rules_yaml
from observability.dashboards import dashboard_json
from observability.schema_check import check_dashboard

ROOT = RULES_FILE.parent.parent.parent.parent
"""The repository's root."""
DASHBOARDS_DIR = RULES_FILE.parent / "dashboards"
"""Only generated dashboards live here: the chart ships every ``*.json`` in it."""


def generated() -> dict[Path, str]:
    """Each generated file (its path under the repository's root) and its text."""
    files = {RULES_FILE.relative_to(ROOT): rules_yaml()}
    for name, text in dashboard_json().items():
        check_dashboard(text, name)
        files[(DASHBOARDS_DIR / name).relative_to(ROOT)] = text
    return files


def stale(root: Path = ROOT) -> list[Path]:
    """The shipped files under ``root`` that differ from what the code makes or are
    missing, and dashboards there that the code no longer makes."""
    return _changes(root, generated())


def write(root: Path = ROOT) -> list[Path]:
    """Write the generated files under ``root`` and remove the dashboards the code no
    longer makes; the paths changed."""
    files = generated()
    changed = _changes(root, files)
    for path in changed:
        if path in files:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(files[path])
        else:
            (root / path).unlink()
    return changed


def _changes(root: Path, files: dict[Path, str]) -> list[Path]:
    differing = [path for path, text in files.items() if _read(root / path) != text]
    shipped = (root / DASHBOARDS_DIR.relative_to(ROOT)).glob("*.json")
    leftover = [path.relative_to(root) for path in shipped]
    return sorted(differing + [path for path in leftover if path not in files])


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m observability.generate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; fail naming each stale file"
    )
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for path in outdated:
            print(f"{path} is stale: run python -m observability.generate", file=sys.stderr)
        return 1 if outdated else 0
    for path in write():
        print(f"wrote {path}" if (ROOT / path).exists() else f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
