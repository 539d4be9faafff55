"""Build the diabetes_spark wheel. The JSON table schemas and the two notebooks live once, in the
top-level ``schemas/`` and ``notebooks/`` folders, and travel inside the wheel as the data packages
``diabetes_spark._schemas`` and ``diabetes_spark._notebooks``."""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "diabetes_spark" / "_version.py").read_text()).group(1)

# pyspark/delta-spark pair of Databricks Runtime 18 LTS (Apache Spark 4.1, Delta Lake 4.1).
LOCAL = [
    # delta-spark 4.1.0 is built against Spark 4.1.0 exactly (4.1.4 lacks classes it needs); [connect] is
    # the Spark Connect client (grpcio), for SPARK_REMOTE / --remote and `diabetes-spark connect-server`.
    "pyspark[connect]==4.1.0",
    "delta-spark==4.1.0",
    "pandas>=2.2,<3",  # pyspark 4.1 does not fully support pandas 3
    "pyarrow>=15",
    "mlflow>=3.8,<4",
    "matplotlib>=3.8",
]

# The OpenTelemetry backend of telemetry (telemetry_backend=opentelemetry). An extra, not a requirement:
# Databricks ML runtimes ship MLflow, which already pins opentelemetry-api/sdk, and installing the wheel
# must not move them. Lower bounds: the versions the tests ran with.
OPENTELEMETRY = [
    "azure-monitor-opentelemetry-exporter>=1.0.0b58",
    # ~=1.17 as the exporter asks (every runtime of constraints/ ships 1.17.1 or later)
    "azure-identity>=1.17",
]

# The deploy-time command setup-secrets. Lower bound: the version the tests ran with.
DEPLOY = ["databricks-sdk>=0.162"]

setup(
    name="diabetes_spark",
    version=VERSION,
    description="Spark ML training and batch scoring of diabetes progression over Delta tables, for Databricks Jobs",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        *find_packages(include=["diabetes_spark", "diabetes_spark.*"]),
        "diabetes_spark._schemas",
        "diabetes_spark._notebooks",
    ],
    package_dir={"diabetes_spark._schemas": "schemas", "diabetes_spark._notebooks": "notebooks"},
    package_data={
        "diabetes_spark": ["py.typed"],
        "diabetes_spark.data": ["*.csv"],
        "diabetes_spark._schemas": ["*.json"],
        "diabetes_spark._notebooks": ["*.py"],
    },
    # What a Databricks ML runtime may lack; pyspark, delta-spark, mlflow and pandas come with it. Nothing
    # deploy-time: databricks-sdk would upgrade protobuf under the runtime's MLflow (it breaks DBR 15.4).
    install_requires=[
        # <1.2: telemetry/opencensus.py stops the span exporter's worker through a private member
        # (no public call does), tested against the versions of this range. No bound on its own
        # dependencies (azure-core, azure-identity, opencensus): every runtime of constraints/ ships
        # versions they accept, and a bound below a runtime's would make %pip install replace the
        # runtime's package (tests/runtimes.py fails when anything moves).
        "opencensus-ext-azure>=1.1.13,<1.2",
    ],
    extras_require={
        "local": LOCAL,
        # The deploy-time command (setup-secrets), run where you deploy from, never on a cluster.
        "deploy": DEPLOY,
        # pip install diabetes_spark[opentelemetry] for telemetry_backend=opentelemetry
        "opentelemetry": OPENTELEMETRY,
        "test": [
            *DEPLOY,
            *OPENTELEMETRY,
            # tests/test_bundle.py reads the bundle's YAML and checks it with databricks-bundles' typed models.
            "databricks-bundles>=1.22.1",
            "pyyaml>=6.0.4",
            "pytest>=8",
            "pytest-timeout>=2.3",
            "chispa>=0.10",
            "hypothesis>=6.100",
            "scikit-learn>=1.4",
            "build>=1.2",
            "ruff==0.17.6",  # pinned: a new release may format or lint differently
            "mypy==2.4.1",  # pinned: a new release may report errors the code did not change to cause
        ],
    },
    entry_points={"console_scripts": ["diabetes-spark=diabetes_spark.cli:entry"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)
