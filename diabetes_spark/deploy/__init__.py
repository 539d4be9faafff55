"""Deploy-time commands, subcommands of the ``diabetes-spark`` console script.

``setup-secrets`` (:mod:`.secrets`) puts the project's secrets into a Databricks secret scope after
checking their values, which the Databricks CLI does not do. Everything else about deploying is the
CLI's: ``databricks bundle validate`` / ``deploy`` read ``databricks.yml`` and ``resources/*.yml``,
and ``databricks bundle validate -t <target> -o json`` prints the resolved jobs.
"""
