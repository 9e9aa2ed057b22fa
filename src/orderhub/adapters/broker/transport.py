"""Broker transports over FastStream: NATS JetStream, Redis Streams, Kafka.

Every transport offers the same few operations to the intake and the workers:

- `publish(partition, data)` returns once the broker has the message durably (JetStream's
  publish ack, Redis' XADD reply, Kafka's acks=all); the platform is answered only then;
- `consume(partition, consumer, handler)` delivers one partition's messages in batches, in order,
  to one worker at a time (the caller holds the partition's lease);
- `ack` after the batch's inbox rows committed; `retry` to have a batch delivered again later;
- `dead_letter` moves a poison message to the dead-letter subject / stream and acks it;
- `lag()` counts messages accepted and not yet acknowledged by a worker;
- `oldest_pending(partition)` says when the oldest message of a partition still in the broker
  arrived, for the label gate (docs/fulfillment.md): a cancel still in the broker holds the label.

Partition n is subject `<prefix>.inbox.<n>` of one work-queue stream on NATS, stream key
`<prefix>:inbox:<n>` with one consumer group on Redis, partition n of topic `<prefix>.inbox` on Kafka.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from faststream import AckPolicy

from orderhub.adapters.broker.envelope import Envelope

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Delivery:
    """One message as the broker delivered it; `ref` is what `ack` / `retry` need."""

    data: bytes
    attempts: int  # 1 on the first delivery
    ref: Any = None


Handler = Callable[[list[Delivery]], Awaitable[None]]


@dataclass(slots=True)
class Consumption:
    """A running subscription to one partition; `stop` ends it (unacked messages are redelivered)."""

    subscribers: list[Any] = field(default_factory=list)

    async def stop(self) -> None:
        for sub in self.subscribers:
            try:
                async with asyncio.timeout(10.0):  # a stop must not hang the worker's shutdown
                    await sub.stop()
            except Exception:  # the connection may be gone; what was not acked is delivered again anyway
                log.warning("stopping a subscriber failed", exc_info=True)


class Transport:
    name = "broker"

    def __init__(self, url: str, partitions: int, prefix: str = "orderhub", batch_size: int = 500, redeliver_s: float = 30.0) -> None:
        self.url = url
        self.partitions = partitions
        self.prefix = prefix
        self.batch_size = batch_size
        self.redeliver_s = redeliver_s  # an unacked message (a crashed worker's) is delivered again after this

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, partition: int, data: bytes, key: str) -> None: ...
    async def consume(self, partition: int, consumer: str, handler: Handler) -> Consumption: ...
    async def ack(self, deliveries: list[Delivery]) -> None: ...
    async def retry(self, deliveries: list[Delivery], delay_s: float) -> None: ...
    async def dead_letter(self, delivery: Delivery, reason: str) -> None: ...
    async def lag(self) -> int: ...
    async def oldest_pending(self, partition: int) -> datetime | None: ...
    async def ping(self) -> bool: ...

    def render_url(self) -> str:
        """The URL without credentials, for logs and /health."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}"


class NatsTransport(Transport):
    """NATS JetStream: one work-queue stream (an acked message is gone), one durable pull consumer
    per partition, filtered to its subject. Publish acks come from the stream's file storage."""

    name = "nats"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from faststream.nats import NatsBroker

        self.stream = f"{self.prefix.upper()}_INBOX"
        self.dlq_stream = f"{self.prefix.upper()}_DLQ"
        self.broker = NatsBroker(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, logger=None)

    def subject(self, partition: int) -> str:
        return f"{self.prefix}.inbox.{partition}"

    def durable(self, partition: int) -> str:
        return f"{self.prefix}-inbox-p{partition}"

    async def start(self) -> None:
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import BadRequestError

        await self.broker.start()
        js = self.broker.config.connection_state.stream
        configs = [
            StreamConfig(name=self.stream, subjects=[f"{self.prefix}.inbox.*"], retention=RetentionPolicy.WORK_QUEUE,
                         storage=StorageType.FILE, duplicate_window=120.0),
            StreamConfig(name=self.dlq_stream, subjects=[f"{self.prefix}.dlq"], storage=StorageType.FILE, max_age=14 * 86400.0),
        ]
        for config in configs:
            try:
                await js.add_stream(config)
            except BadRequestError:  # exists with another config (an older partition count): keep it
                await js.update_stream(config)
        for partition in range(self.partitions):
            await js.add_consumer(self.stream, self._consumer_config(partition))

    def _consumer_config(self, partition: int) -> Any:
        from nats.js.api import AckPolicy as JsAck, ConsumerConfig, DeliverPolicy

        return ConsumerConfig(
            durable_name=self.durable(partition), filter_subject=self.subject(partition), ack_policy=JsAck.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=self.redeliver_s, max_ack_pending=20_000,
        )

    async def stop(self) -> None:
        await self.broker.stop()

    async def publish(self, partition: int, data: bytes, key: str) -> None:
        # Nats-Msg-Id: a publish retried after a lost ack is stored once (the stream's duplicate window)
        await self.broker.publish(data, self.subject(partition), stream=self.stream, headers={"Nats-Msg-Id": key}, timeout=2.0)

    async def consume(self, partition: int, consumer: str, handler: Handler) -> Consumption:
        """Our own fetch loop on FastStream's JetStream connection, not FastStream's pull subscriber:
        FastStream 0.7.8's loop catches only nats' TimeoutError, and nats-py 2.16's fetch can also
        raise the builtin one, which kills the loop with a batch fetched and never handled (it came
        back only after the 30 s redelivery: 13-16 % of messages at 50-150 msg/s)."""
        js = self.broker.config.connection_state.stream
        pull = _NatsPull(js, self.subject(partition), self.durable(partition), self.stream, self._consumer_config(partition),
                         self.batch_size, handler)
        await pull.start()
        return Consumption([pull])

    async def ack(self, deliveries: list[Delivery]) -> None:
        await asyncio.gather(*(d.ref.ack() for d in deliveries))

    async def retry(self, deliveries: list[Delivery], delay_s: float) -> None:
        await asyncio.gather(*(d.ref.nak(delay=delay_s) for d in deliveries))

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        headers = {"OrderHub-Reason": reason[:500], "OrderHub-Attempts": str(delivery.attempts)}
        await self.broker.publish(delivery.data, f"{self.prefix}.dlq", stream=self.dlq_stream, headers=headers, timeout=5.0)
        await delivery.ref.ack()

    async def lag(self) -> int:
        js = self.broker.config.connection_state.stream
        infos = await asyncio.gather(*(js.consumer_info(self.stream, self.durable(p)) for p in range(self.partitions)))
        return sum(info.num_pending + info.num_ack_pending for info in infos)

    async def oldest_pending(self, partition: int) -> datetime | None:
        """A work-queue stream keeps a message until it is acked: the partition's first one is the oldest pending."""
        from nats.js.errors import NotFoundError

        js = self.broker.config.connection_state.stream
        try:
            msg = await js.get_msg(self.stream, seq=1, subject=self.subject(partition), next=True)
        except NotFoundError:
            return None
        try:
            return Envelope.decode(msg.data or b"").received_at
        except ValueError:  # a poison message waiting for its dead letter: as old as the stream says
            return msg.time

    async def ping(self) -> bool:
        return await self.broker.ping(timeout=2.0)


class _NatsPull:
    """One partition's durable pull consumer, fetched in batches until stopped."""

    def __init__(self, js: Any, subject: str, durable: str, stream: str, config: Any, batch_size: int, handler: Handler) -> None:
        self.js, self.subject, self.durable, self.stream, self.config = js, subject, durable, stream, config
        self.batch_size = batch_size
        self.handler = handler
        self.sub: Any = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.sub = await self.js.pull_subscribe(self.subject, durable=self.durable, stream=self.stream, config=self.config)
        self.task = asyncio.create_task(self._run(), name=f"nats-pull-{self.durable}")

    async def _run(self) -> None:
        from nats.errors import ConnectionClosedError, NoRespondersError
        from nats.js.errors import ServiceUnavailableError

        while True:
            try:
                # wait for one message, then take what else is there: one fetch of the whole batch would, once
                # its first message came, linger until the batch filled or its timeout ran out (0.5 s of latency
                # on every message of a quiet partition: the scaled mode's steady-state p50 was 469 ms)
                messages = await self.sub.fetch(batch=1, timeout=5.0)
                if self.batch_size > 1:
                    with contextlib.suppress(TimeoutError):
                        messages += await self.sub.fetch(batch=self.batch_size - 1, timeout=0.02)
            except TimeoutError:  # nothing waiting (nats-py raises its own subclass or the builtin)
                continue
            except (ConnectionClosedError, NoRespondersError, ServiceUnavailableError) as exc:  # reconnecting: unacked ones come back
                log.warning("NATS fetch on %s failed (%s); trying again", self.durable, type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            try:
                await self.handler([Delivery(m.data, m.metadata.num_delivered or 1, m) for m in messages])
            except asyncio.CancelledError:
                raise
            except Exception:  # not acked: JetStream delivers them again after ack_wait
                log.exception("handling a batch of %d messages from %s failed", len(messages), self.durable)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()


class RedisTransport(Transport):
    """Redis Streams: a stream per partition and one consumer group. Redis 7 redelivers nothing by
    itself: a second subscriber per partition reclaims (XAUTOCLAIM) what stayed pending longer than
    `redeliver_s` — a crashed worker's messages, or a batch put back by `retry`.

    Durability is Redis' own: run it with appendonly yes / appendfsync everysec (or always) for the
    raw messages; the machine's test Redis keeps nothing on disk."""

    name = "redis"
    group = "workers"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from faststream.redis import RedisBroker

        self.broker = RedisBroker(self.url, max_connections=256, logger=None)
        self._publishing = asyncio.Semaphore(128)

    def key(self, partition: int) -> str:
        return f"{self.prefix}:inbox:{partition}"

    async def start(self) -> None:
        from redis.exceptions import ResponseError

        await self.broker.start()
        client = self.broker._connection
        for partition in range(self.partitions):
            try:
                await client.xgroup_create(self.key(partition), self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def stop(self) -> None:
        await self.broker.stop()

    async def publish(self, partition: int, data: bytes, key: str) -> None:
        # base64: FastStream's Redis batch parser turns bodies into JSON text, which refuses bytes
        # that are not UTF-8 — and a message must reach the worker whatever it holds
        async with self._publishing:
            await self.broker.publish(base64.b64encode(data), stream=self.key(partition))

    async def consume(self, partition: int, consumer: str, handler: Handler) -> Consumption:
        from faststream.redis import RedisStreamMessage, StreamSub

        stream = self.key(partition)
        client = self.broker._connection

        async def on_new(body: list[bytes], message: RedisStreamMessage) -> None:
            ids = message.raw_message["message_ids"]
            await handler([Delivery(_unpack(data), 1, (stream, mid)) for data, mid in zip(body, ids, strict=True)])

        async def on_reclaimed(body: list[bytes], message: RedisStreamMessage) -> None:
            ids = message.raw_message["message_ids"]
            pending = await client.xpending_range(stream, self.group, min=min(ids), max=max(ids), count=len(ids))
            times = {p["message_id"]: p["times_delivered"] for p in pending}
            await handler([Delivery(_unpack(data), int(times.get(mid, 2)), (stream, mid)) for data, mid in zip(body, ids, strict=True)])

        fresh = self.broker.subscriber(
            stream=StreamSub(stream, group=self.group, consumer=consumer, batch=True, max_records=self.batch_size, polling_interval=50),
            ack_policy=AckPolicy.MANUAL, persistent=False,
        )
        fresh(on_new)
        reclaim = self.broker.subscriber(
            stream=StreamSub(stream, group=self.group, consumer=consumer, batch=True, max_records=self.batch_size,
                             min_idle_time=int(self.redeliver_s * 1000), polling_interval=int(min(self.redeliver_s, 5.0) * 1000)),
            ack_policy=AckPolicy.MANUAL, persistent=False,
        )
        reclaim(on_reclaimed)
        await fresh.start()
        await reclaim.start()
        return Consumption([fresh, reclaim])

    async def ack(self, deliveries: list[Delivery]) -> None:
        by_stream: dict[str, list[bytes]] = {}
        for d in deliveries:
            by_stream.setdefault(d.ref[0], []).append(d.ref[1])
        client = self.broker._connection
        for stream, ids in by_stream.items():
            async with client.pipeline(transaction=True) as pipe:  # acked and trimmed together
                pipe.xack(stream, self.group, *ids)
                pipe.xdel(stream, *ids)
                await pipe.execute()

    async def retry(self, deliveries: list[Delivery], delay_s: float) -> None:
        """Left pending: the reclaiming subscriber takes them after `redeliver_s` (Redis has no delayed nack)."""

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        client = self.broker._connection
        await client.xadd(f"{self.prefix}:dlq", {"data": delivery.data, "reason": reason[:500], "attempts": str(delivery.attempts)},
                          maxlen=100_000, approximate=True)
        await self.ack([delivery])

    async def lag(self) -> int:
        client = self.broker._connection
        total = 0
        for partition in range(self.partitions):
            total += int(await client.xlen(self.key(partition)))  # acked entries are deleted: what is left is not done
        return total

    async def oldest_pending(self, partition: int) -> datetime | None:
        """Acked entries are deleted: the stream's first entry is the oldest pending. Its id is the XADD time in ms
        (FastStream's own framing wraps the envelope), a few ms after the intake received the message."""
        first = await self.broker._connection.xrange(self.key(partition), count=1)
        if not first:
            return None
        entry_id = first[0][0].decode() if isinstance(first[0][0], bytes) else str(first[0][0])
        return datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000, UTC)

    async def ping(self) -> bool:
        return await self.broker.ping(timeout=2.0)


def _unpack(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:  # not written by OrderHub: handed on as it is (the worker dead-letters it)
        return raw


class KafkaTransport(Transport):
    """Kafka: topic `<prefix>.inbox` with one partition per OrderHub partition, assigned by hand to
    the lease holder; `ack` commits the offset after the batch. Not exercised on this project's CI
    machine (no Kafka there): the code path is the same as NATS / Redis above the transport."""

    name = "kafka"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from faststream.kafka import KafkaBroker

        parts = urlsplit(self.url)
        self.bootstrap = parts.netloc
        self.topic = f"{self.prefix}.inbox"
        self.broker = KafkaBroker(self.bootstrap, acks="all", enable_idempotence=True, logger=None)

    async def start(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.topic, self.partitions, 1), NewTopic(f"{self.prefix}.dlq", 1, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()

    async def publish(self, partition: int, data: bytes, key: str) -> None:
        await self.broker.publish(data, self.topic, partition=partition, key=key.encode())

    async def consume(self, partition: int, consumer: str, handler: Handler) -> Consumption:
        from faststream.kafka import KafkaMessage, TopicPartition

        sub = self.broker.subscriber(
            partitions=[TopicPartition(self.topic, partition)], group_id=f"{self.prefix}-workers", batch=True,
            max_records=self.batch_size, auto_offset_reset="earliest", ack_policy=AckPolicy.MANUAL, persistent=False,
        )

        async def on_batch(body: list[bytes], message: KafkaMessage) -> None:
            await handler([Delivery(data, 1, message) for data in body])

        sub(on_batch)
        await sub.start()
        return Consumption([sub])

    async def ack(self, deliveries: list[Delivery]) -> None:
        for message in {id(d.ref): d.ref for d in deliveries}.values():
            await message.ack()

    async def retry(self, deliveries: list[Delivery], delay_s: float) -> None:
        """Not committed: the partition's next owner (or this one after a restart) reads them again."""

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self.broker.publish(delivery.data, f"{self.prefix}.dlq", headers={"reason": reason[:500]})

    async def lag(self) -> int:
        return 0  # consumer-group lag is read from Kafka's own tooling (kafka-consumer-groups)

    async def oldest_pending(self, partition: int) -> datetime | None:
        return None  # not known here: on Kafka the label gate sees only what the workers have inserted (docs/scaling.md)

    async def ping(self) -> bool:
        return await self.broker.ping(timeout=2.0)


TRANSPORTS: dict[str, type[Transport]] = {"nats": NatsTransport, "redis": RedisTransport, "rediss": RedisTransport, "kafka": KafkaTransport}


def transport_for(url: str, partitions: int, *, prefix: str = "orderhub", batch_size: int = 500, redeliver_s: float = 30.0) -> Transport:
    scheme = urlsplit(url).scheme
    cls = TRANSPORTS.get(scheme)
    if cls is None:
        raise ValueError(f"unsupported broker URL scheme {scheme!r}: use nats://, redis:// or kafka://")
    return cls(url, partitions, prefix=prefix, batch_size=batch_size, redeliver_s=redeliver_s)
