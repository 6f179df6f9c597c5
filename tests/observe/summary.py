"""The last line of ``make observe-test``, printed once every test of it passed."""

from __future__ import annotations

from observability.alerts import ALERTS
from observability.dashboards import panels


def main() -> None:
    print(
        f"observability: {len({(p.dashboard, p.title) for p in panels()})} panels and"
        f" {len(ALERTS)} alerts evaluated on"
        " Prometheus, all returned data; events read by a stock consumer"
    )


if __name__ == "__main__":
    main()
