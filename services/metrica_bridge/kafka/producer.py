"""A thin typed wrapper over ``confluent_kafka.Producer``.

Shared by the simulator, the dead-letter queue and replay. Two rules:

* ``produce`` returns a :class:`concurrent.futures.Future` that resolves to a
  :class:`Delivery` or fails with :class:`DeliveryError` (``asyncio.wrap_future`` makes it
  awaitable); a background thread serves librdkafka's delivery reports, so futures resolve
  without the caller polling. ``send`` is the same without a future, for bulk producers
  (the simulator, replay) that only need :meth:`Producer.flush` as a barrier;
* delivery failures are never swallowed: even when nobody looks at the futures,
  :meth:`Producer.flush` raises :class:`UndeliveredError` if anything produced since the last
  flush failed or is still in flight when the timeout expires.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import confluent_kafka
from confluent_kafka import KafkaError

from metrica_bridge.config import Settings
from metrica_bridge.kafka.settings import (
    PRODUCER_DEFAULTS,
    for_producer,
    layered,
    producer_config,
)
from metrica_bridge.logs import kafka_logger

Headers = Sequence[tuple[str, bytes]]


class ProducerError(RuntimeError):
    """Base of the producer's errors. Messages hold topics and error codes, never payloads."""


class DeliveryError(ProducerError):
    """The broker did not accept one message (after librdkafka's own retries)."""

    def __init__(self, topic: str, error: KafkaError) -> None:
        super().__init__(f"delivery to {topic!r} failed: {error.name()}: {error.str()}")
        self.topic = topic
        self.code: int = error.code()
        self.retriable: bool = bool(error.retriable())


class UndeliveredError(ProducerError):
    """``flush`` ended with messages undelivered: still queued, or failed since the last flush."""

    def __init__(self, remaining: int, failed: int, first_failure: str | None) -> None:
        detail = f"; first failure: {first_failure}" if first_failure else ""
        super().__init__(f"{remaining} message(s) still in flight, {failed} failed{detail}")
        self.remaining = remaining
        self.failed = failed


class ProducerFatalError(ProducerError):
    """librdkafka reported a fatal error (e.g. idempotence broken); the producer is unusable."""


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    partition: int
    offset: int


class Producer:
    """Produce bytes with keys, headers and timestamps; see the module docstring for guarantees."""

    def __init__(
        self,
        config: Mapping[str, object],
        *,
        with_defaults: bool = True,
        buffer_timeout_s: float = 60.0,
        futures: bool = True,
    ) -> None:
        """``futures=False`` asks librdkafka to report failed deliveries only: cheaper for
        bulk producers that use :meth:`send` and :meth:`flush` alone; :meth:`produce` is then
        unavailable (its futures would never resolve)."""
        props = for_producer(
            layered(PRODUCER_DEFAULTS, config) if with_defaults else layered(config)
        )
        self._fatal: str | None = None
        self._futures = futures
        extra: dict[str, Any] = {"error_cb": self._on_error, "logger": kafka_logger()}
        if not futures:
            extra["delivery.report.only.error"] = True
        try:
            self._producer = confluent_kafka.Producer({**props, **extra})
        except (confluent_kafka.KafkaException, TypeError, ValueError) as exc:
            raise ProducerError(f"invalid producer configuration: {exc}") from None
        self._raw_produce = self._producer.produce
        self._buffer_timeout_s = buffer_timeout_s
        self._lock = threading.Lock()
        self._failed = 0
        self._first_failure: str | None = None
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-producer", daemon=True)
        self._poller.start()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, futures: bool = True, **overrides: object
    ) -> Producer:
        return cls(producer_config(settings, **overrides), with_defaults=False, futures=futures)

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
        *,
        partition: int | None = None,
    ) -> Future[Delivery]:
        """Queue one message; the future resolves when the broker acknowledged it."""
        if not self._futures:
            raise ProducerError("this producer was created with futures=False: use send()")
        future: Future[Delivery] = Future()
        # Running futures cannot be cancelled, so the delivery report can always resolve it.
        future.set_running_or_notify_cancel()
        self._produce(topic, key, value, headers, timestamp_ms, partition, self._reporter(future))
        return future

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
        *,
        partition: int | None = None,
    ) -> None:
        """Queue one message without a per-message future (several times cheaper).

        Failures are still counted and raised by the next :meth:`flush`.
        """
        if headers or timestamp_ms is not None or partition is not None or self._fatal:
            self._produce(topic, key, value, headers, timestamp_ms, partition, self._count_report)
            return
        # The common bulk case, kept lean: it runs tens of thousands of times a second.
        try:
            self._raw_produce(topic, value, key, on_delivery=self._count_report)
        except (BufferError, confluent_kafka.KafkaException):
            self._produce(topic, key, value, headers, timestamp_ms, partition, self._count_report)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int | None,
        partition: int | None,
        on_delivery: Any,
    ) -> None:
        if self._fatal is not None:
            raise ProducerFatalError(self._fatal)
        if self._closed.is_set():
            raise ProducerError("the producer is closed")
        kwargs: dict[str, Any] = {"on_delivery": on_delivery}
        if headers:
            kwargs["headers"] = list(headers)
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        if partition is not None:
            kwargs["partition"] = partition
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                # The local queue is full: wait for deliveries to make room (backpressure).
                now = time.monotonic()
                deadline = deadline or now + self._buffer_timeout_s
                if now > deadline:
                    raise ProducerError(
                        f"local queue still full after {self._buffer_timeout_s}s"
                    ) from None
                self._producer.poll(0.05)
            except confluent_kafka.KafkaException as exc:
                raise ProducerError(f"cannot produce to {topic!r}: {exc.args[0]}") from None

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued message; raise :class:`UndeliveredError` unless all made it."""
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            failed, first = self._failed, self._first_failure
            self._failed, self._first_failure = 0, None
        if self._fatal is not None:
            raise ProducerFatalError(self._fatal)
        if remaining or failed:
            raise UndeliveredError(remaining, failed, first)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports now (the background thread does it anyway)."""
        served: int = self._producer.poll(timeout_s)
        return served

    def __len__(self) -> int:
        """Messages queued or in flight."""
        return len(self._producer)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush (raising if messages stay undelivered), then stop the poller."""
        if self._closed.is_set():
            return
        try:
            self.flush(timeout_s)
        finally:
            self._closed.set()
            self._poller.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            # Already failing: don't mask the original error with a flush error.
            with contextlib.suppress(ProducerError):
                self.close(timeout_s=5.0)

    def _record_failure(self, error: KafkaError, message: confluent_kafka.Message) -> DeliveryError:
        failure = DeliveryError(message.topic() or "?", error)
        with self._lock:
            self._failed += 1
            if self._first_failure is None:
                self._first_failure = str(failure)
        return failure

    def _count_report(self, error: KafkaError | None, message: confluent_kafka.Message) -> None:
        if error is not None:
            self._record_failure(error, message)

    def _reporter(self, future: Future[Delivery]) -> Any:
        def report(error: KafkaError | None, message: confluent_kafka.Message) -> None:
            if error is None:
                topic = message.topic() or ""
                # A delivered message always has both; the stubs just say Optional.
                partition, offset = message.partition() or 0, message.offset() or 0
                future.set_result(Delivery(topic, partition, offset))
            else:
                future.set_exception(self._record_failure(error, message))

        return report

    def _on_error(self, error: KafkaError) -> None:
        # Non-fatal errors (a broker down) are retried by librdkafka and end, if ever, as
        # delivery failures; only fatal ones poison the producer.
        if error.fatal():
            self._fatal = f"fatal producer error: {error.name()}: {error.str()}"

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)
