"""``type: sqs``: consume from and publish to AWS SQS queues, on aiobotocore.

Consume (``SqsSource``), with the delivery semantics of DESIGN §6:

* ``receivers`` concurrent long polls (``WaitTimeSeconds`` up to 20), each asking
  for up to 10 messages, never more than ``max_in_flight`` unsettled at once.
* One heartbeat task extends the visibility of every held message that nears
  expiry (``ChangeMessageVisibilityBatch``), so a slow handler never causes a
  second delivery. A message received again while still held here (its
  visibility lapsed anyway) is not delivered twice: the held delivery adopts the
  newest receipt handle, which settle and the heartbeat then use.
* ``ACK`` deletes with ``DeleteMessageBatch``; ``RETRY_LATER`` sets the
  visibility to 0. A batch call can answer 200 with some entries failed: only
  those are retried (``SenderFault`` entries are not: they cannot succeed).
* FIFO queues (``.fifo``) with ``ordering: key`` (the default): the messages of
  one ``MessageGroupId`` are yielded one at a time, in order; groups run
  concurrently. A group's ``RETRY_LATER`` releases the messages held behind it.
  Receives then run one at a time, so messages are booked in the order SQS
  hands them out (emulators such as moto may split a group across concurrent
  long polls; real SQS does not, and the cost is small: 10 messages a call).
* ``Delivery.headers`` are the message attributes, by name; ``meta`` carries
  ``message_id`` (the MessageId, stable across redelivery), ``receive_count``,
  ``sent_timestamp``, ``group_id``... The correlation id is read from the
  ``x-correlation-id`` attribute unless the event mapping names another source.
* ``status()`` reports the queue depth (``ApproximateNumberOfMessages`` as
  ``<queue>`` and ``...NotVisible`` as ``<queue>:not_visible``), polled every
  ``depth_interval``.
* ``stop()`` lets a receive that is about to answer finish (a long poll that is
  still waiting is cancelled; what it might have taken comes back after the
  visibility timeout), makes every received but undelivered message visible
  again, flushes pending deletes, then closes the client.

Publish (``SqsPublisher``): batched ``SendMessageBatch`` (up to 10 entries and
``max_batch_bytes``, retrying failed entries only). See ``connectors.sqs.publish``
for the FIFO group and deduplication ids, and ``connectors.sqs.attributes`` for
how headers become message attributes (CloudEvents prefix ``ce-``, at most 10
attributes).

Credentials come from the standard AWS chain (environment, shared profile, web
identity / IRSA, container and instance metadata), never from the YAML.

Modules, each importing only those before it: ``config`` (the pydantic models),
``errors`` (SDK errors as ``ConnectorError``), ``client`` (the aiobotocore client
and queue look-ups), ``batch`` (batch calls and retries of failed entries),
``inflight`` (the source's book of held messages, without I/O), ``message`` (an
SQS message as a ``Delivery``'s body, headers and metadata), ``consume``
(``SqsSource``), ``attributes`` and ``publish`` (``SqsPublisher``), and
``embedded`` (the server ``bridge dev`` starts).
"""

from __future__ import annotations

from connectors.sqs.config import SqsConfig, SqsConsumeConfig, SqsPublishConfig
from connectors.sqs.consume import SqsSource
from connectors.sqs.embedded import embedded_broker
from connectors.sqs.publish import SqsPublisher


def source(cfg: SqsConfig, name: str) -> SqsSource:
    """The ``ConnectorKind.source`` factory."""
    return SqsSource(cfg, name)


def publisher(cfg: SqsConfig, name: str) -> SqsPublisher:
    """The ``ConnectorKind.publisher`` factory."""
    return SqsPublisher(cfg, name)


__all__ = [
    "SqsConfig",
    "SqsConsumeConfig",
    "SqsPublishConfig",
    "SqsPublisher",
    "SqsSource",
    "embedded_broker",
    "publisher",
    "source",
]
