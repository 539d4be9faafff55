"""Deploy-time commands: subcommands of the one ``diabetes-spark`` console script.

``diabetes-spark setup-secrets`` (:mod:`.secrets`) creates the Databricks secret scope and puts the
project's secrets. ``diabetes-spark jobs-json`` (:mod:`.bundle`) writes the Asset Bundle's jobs as
Jobs API 2.1 JSON, for teams that create jobs without bundles; :mod:`.cron` checks their schedules.
"""

__all__ = ["bundle", "cron", "secrets"]
