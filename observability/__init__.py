"""What blockferry ships for watching it: dashboards and alert rules, generated from code."""
