"""Class-data-sharing archives for the project's JVMs (Kafka's broker and tools, Spark's driver).

Most of a JVM's start is loading and linking the same few thousand classes from the same jars;
a HotSpot CDS archive holds them already parsed and is mapped at start instead
(``-XX:SharedArchiveFile``). A training run writes it as it exits (JDK 13+'s dynamic archive,
``-XX:ArchiveClassesAtExit``). The archive is optional: where none was trained, or the JDK or
the jars changed since, the JVM starts as it would without it (the mismatch is told only to the
JVM's own log, switched off here). `shopstream test-setup` trains them.

An archive belongs to one class path and one JDK, so its file name carries a digest of both.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

ARCHIVE_DIR = "class-data"
# A mismatched archive is not an error (the JVM runs without it), so its warnings are not shown.
QUIET = ("-Xlog:cds=off", "-Xlog:cds+dynamic=off")


def archive_path(jars_dir: Path, kind: str, class_path: str) -> Path:
    """Where the archive of ``kind`` (e.g. ``kafka-broker``) for this class path and JDK lives.

    Under the jars folder's real path: test homes link one shared jars folder, so they share it too.
    """
    java = shutil.which("java") or "java"
    real_java = Path(java).resolve()
    jdk = f"{real_java}:{real_java.stat().st_mtime_ns if real_java.exists() else 0}"
    digest = hashlib.sha256(f"{jdk}\n{class_path}".encode()).hexdigest()[:16]
    return jars_dir.resolve() / ARCHIVE_DIR / f"{kind}-{digest}.jsa"


def sharing_options(archive: Path) -> list[str]:
    """The JVM options that use ``archive``; none when it has not been trained."""
    if not archive.is_file():
        return []
    return [f"-XX:SharedArchiveFile={archive}", *QUIET]


def training_options(archive: Path) -> tuple[list[str], Path]:
    """Options that make a JVM write an archive for ``archive``'s place as it exits, and the
    scratch file it writes (``publish`` moves it into place once that JVM is gone)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    scratch = archive.with_name(f".{archive.name}.{os.getpid()}.partial")
    scratch.unlink(missing_ok=True)
    return [f"-XX:ArchiveClassesAtExit={scratch}", *QUIET], scratch


def publish(scratch: Path, archive: Path) -> bool:
    """Move a trained archive into place (atomically: a JVM starting meanwhile maps the old one or none)."""
    if not scratch.is_file() or scratch.stat().st_size == 0:
        scratch.unlink(missing_ok=True)
        return False
    os.replace(scratch, archive)
    return True
