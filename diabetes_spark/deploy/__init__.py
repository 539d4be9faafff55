"""Deploy-time commands: subcommands of the one ``diabetes-spark`` console script.

``diabetes-spark setup-secrets`` (:mod:`.secrets`) creates the Databricks secret scope and puts the
project's secrets. ``diabetes-spark jobs-json`` (:mod:`.bundle`) writes the Asset Bundle's jobs as
Jobs API 2.1 JSON, for teams that create jobs without bundles: it resolves the bundle's references
offline (:mod:`.references`), names the files ``bundle deploy`` would upload (:mod:`.uploads`),
checks resources with databricks-bundles' typed models (:mod:`.models`) and schedules (:mod:`.cron`).
"""

__all__ = ["bundle", "cron", "models", "references", "secrets", "uploads"]
