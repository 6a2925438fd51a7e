"""streaming.spark_session: the Kafka connector must be pyspark's own version."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.job_errors import StreamJobError
from streaming.spark_session import check_connector_version


def test_connector_version_must_equal_pyspark() -> None:
    import pyspark

    jars = [Path("kafka-clients-3.9.2.jar"), Path(f"spark-sql-kafka-0-10_2.13-{pyspark.__version__}.jar")]
    assert check_connector_version(jars) == pyspark.__version__
    with pytest.raises(
        StreamJobError, match=rf"connector is spark-sql-kafka-0-10_2.13 4.1.0 but pyspark is {pyspark.__version__}"
    ):
        check_connector_version([Path("spark-sql-kafka-0-10_2.13-4.1.0.jar")])
