"""JVM jars resolved by Maven from the committed POM (``streaming/jvm/pom.xml``).

Each POM profile is laid under ``SHOPSTREAM_HOME/jars/<profile>/``. The first run needs
Maven Central; later runs use the folder (and ``~/.m2``) and need no network.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

# One POM for both jar sets (the broker the ground floor runs, the connector the stream loads): a
# file beside the stream job that declares the Spark version it must match, read here, not imported.
POM_PATH = Path(__file__).resolve().parents[1] / "streaming" / "jvm" / "pom.xml"
KAFKA_BROKER = "kafka-broker"
SPARK_CONNECTOR = "spark-connector"


class ToolMissingError(RuntimeError):
    """A program ShopStream needs (Java 17+, Maven) is not installed."""


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ToolMissingError(
            "Java 17 or newer is needed to run Apache Kafka and Spark, and `java` is not on PATH. "
            "Install it, e.g. `apt-get install openjdk-17-jdk-headless` or `brew install openjdk@17`."
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    banner = result.stderr or result.stdout
    version = _java_major_version(banner)
    if version is None or version < 17:
        raise ToolMissingError(
            f"Java 17 or newer is needed; `java -version` says: {banner.strip().splitlines()[0]!r}. "
            "Install Java 17 (e.g. `apt-get install openjdk-17-jdk-headless`) and put it first on PATH."
        )
    return java


def _java_major_version(banner: str) -> int | None:
    for token in banner.replace('"', " ").split():
        head = token.split(".")[0].split("-")[0]
        if head.isdigit() and "." in token:
            major = int(head)
            # Java 8 and older report 1.x
            return int(token.split(".")[1]) if major == 1 else major
    return None


def require_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolMissingError(
            "Maven is needed once to fetch the Kafka and Spark-connector jars, and `mvn` is not on PATH. "
            "Install it, e.g. `apt-get install maven` or `brew install maven`."
        )
    return mvn


def resolve_jars(profile: str, jars_root: Path, *, progress: Callable[[str], None] = print) -> list[Path]:
    """Lay the jars of one POM profile under ``jars_root/profile`` and return them.

    Resolution is skipped when the folder was filled from the same POM before.
    """
    destination = jars_root / profile
    stamp = destination / ".pom-sha256"
    pom_digest = hashlib.sha256(POM_PATH.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == pom_digest:
        return sorted(destination.glob("*.jar"))
    # Several processes may ask at once (the test suite's workers on a fresh clone): one
    # resolves, the others wait and find its stamp.
    jars_root.mkdir(parents=True, exist_ok=True)
    with (jars_root / f".{profile}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if stamp.exists() and stamp.read_text().strip() == pom_digest:
                return sorted(destination.glob("*.jar"))
            return _resolve(profile, destination, stamp, pom_digest, progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _resolve(
    profile: str, destination: Path, stamp: Path, pom_digest: str, progress: Callable[[str], None]
) -> list[Path]:
    require_java()
    mvn = require_maven()
    progress(f"resolving {profile} jars with Maven into {destination} (first run only) ...")
    staging = destination.with_name(destination.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM_PATH),
        "-P",
        profile,
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolMissingError(
            f"Maven could not resolve the {profile} jars (exit {result.returncode}).\n"
            f"command: {' '.join(command)}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    # Swap in whole so an interrupted run never leaves half a classpath behind.
    shutil.rmtree(destination, ignore_errors=True)
    staging.rename(destination)
    stamp.write_text(pom_digest)
    jars = sorted(destination.glob("*.jar"))
    progress(f"resolved {len(jars)} {profile} jars")
    return jars
