"""The topic's high watermarks, kept fresh by a thread of its own for the stream's lag figure and idle check."""

from __future__ import annotations

import threading


class WatermarkWatch:
    """The topic's high watermarks, refreshed in a thread of its own every ``interval`` seconds.

    The consumer-lag figure and the idle check read the last answer instead of asking the
    broker on the batch thread (a round trip per partition, each as slow as the broker).
    """

    def __init__(self, kafka_bootstrap: str, topic: str, interval: float = 0.5) -> None:
        from shopstream.kafka_admin import offset_reader

        self.topic = topic
        self.interval = interval
        self.marks: dict[int, tuple[int, int]] | None = None  # None: no answer yet, or the last failed
        self._consumer = offset_reader(kafka_bootstrap)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shopstream-watermarks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from confluent_kafka import KafkaException

        from shopstream.kafka_admin import read_watermarks

        while not self._stop.is_set():
            try:
                self.marks = read_watermarks(self._consumer, self.topic, timeout=2)
            except KafkaException:
                self.marks = None
            self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()
