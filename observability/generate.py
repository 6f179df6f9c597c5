"""Write what observability ships (``python -m observability.generate``), or with
``--check`` say which shipped file is not what the code makes (exit status 1)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from observability.alerts import RULES_FILE, rules_yaml
from observability.dashboards import dashboard_json

DASHBOARDS_DIR = RULES_FILE.parent / "dashboards"


def generated() -> dict[Path, str]:
    files = {RULES_FILE: rules_yaml()}
    files.update({DASHBOARDS_DIR / name: text for name, text in dashboard_json().items()})
    return files


def stale() -> list[Path]:
    """The shipped files that differ from what the code makes, or are not made by it."""
    files = generated()
    made_here = set(DASHBOARDS_DIR.glob("*.json")) - set(files)
    return sorted(
        [path for path, text in files.items() if not path.exists() or path.read_text() != text]
        + list(made_here)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; fail if stale")
    if parser.parse_args().check:
        outdated = stale()
        for path in outdated:
            print(f"stale: {path} (run python -m observability.generate)", file=sys.stderr)
        sys.exit(1 if outdated else 0)
    DASHBOARDS_DIR.mkdir(parents=True, exist_ok=True)
    for path in set(DASHBOARDS_DIR.glob("*.json")) - set(generated()):
        path.unlink()
    for path, text in generated().items():
        path.write_text(text)


if __name__ == "__main__":
    main()
