"""The last line of ``make chart-test``, printed once every test of the chart passed."""

from __future__ import annotations

from tests.chart.chart import EXAMPLES, KUBERNETES_VERSIONS


def main() -> None:
    versions = ", ".join(v.rsplit(".", 1)[0] for v in KUBERNETES_VERSIONS)
    print(
        f"chart: {len(EXAMPLES)} examples valid on K8s {versions}; installed, backup and"
        " restore identical, upgrade ok"
    )


if __name__ == "__main__":
    main()
