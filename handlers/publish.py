"""``type: publish``: send the event to a destination of a connector (Kafka topic, queue ...).

Transport-agnostic: the runtime hands over the connector's ``Publisher`` by name.
CloudEvents binary mode by default (attributes as headers with the publisher's
prefix: ``ce_`` for Kafka, ``cloudEvents:`` for AMQP, ``ce-`` otherwise, where the
values are percent-encoded as the HTTP binding writes them; the body is the data:
JSON, text as UTF-8, bytes as they are), or structured mode (the whole envelope as
JSON, bytes as ``data_base64``). ``traceparent``, ``tracestate``, ``baggage`` and
the correlation id always travel in the headers.
"""

from __future__ import annotations

from typing import Any, Literal

from opentelemetry import trace
from pydantic import Field

from bridge.context import Context
from bridge.events import Event
from bridge.handling import HandlerConfig, HandlerEnv
from bridge.templates import EVENT_ROOTS, Template, TemplateError, event_scope
from bridge.tracing import inject
from bridge.transport import Publisher


class PublishHandlerConfig(HandlerConfig):
    """Publish each event to a connector's destination."""

    type: Literal["publish"] = Field(
        "publish", description="Handler kind: publish the event to a connector."
    )
    connector: str = Field(description="Name of the connector to publish through.")
    destination: str = Field(description="Topic, queue URL, `exchange/routing-key` (a template).")
    key: str | None = Field(None, description="Message key template (Kafka key, SQS group id).")
    mode: Literal["binary", "structured"] = Field("binary", description="CloudEvents content mode.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers (templates).")

    def connector_refs(self) -> dict[str, str]:
        return {**super().connector_refs(), "connector": self.connector}

    def check(self, cfg: Any) -> list[tuple[tuple[str, ...], str]]:
        problems: list[tuple[tuple[str, ...], str]] = []
        for name, text in (("destination", self.destination), ("key", self.key)):
            if text is not None:
                try:
                    Template(text, EVENT_ROOTS)
                except TemplateError as exc:
                    problems.append(((name,), str(exc)))
        return problems


class PublishHandler:
    """Publishes through one connector's publisher."""

    def __init__(self, cfg: PublishHandlerConfig, publisher: Publisher) -> None:
        self.cfg = cfg
        self.publisher = publisher
        self.destination = Template(cfg.destination, EVENT_ROOTS)
        self.key = Template(cfg.key, EVENT_ROOTS) if cfg.key else None
        self.headers = {k: Template(v, EVENT_ROOTS) for k, v in cfg.headers.items()}
        self.prefix: str = getattr(publisher, "ce_prefix", "ce-")

    async def invoke(self, event: Event[Any], ctx: Context) -> Any:
        scope = event_scope(event)
        destination = self.destination.render_str(scope)
        key = self.key.render_str(scope) if self.key else None
        headers = message_headers(event, self.cfg.mode, self.prefix)
        for name, template in self.headers.items():
            headers[name] = template.render_str(scope)
        if self.cfg.mode == "structured":
            body = event.to_json()
        else:
            body = event.data_bytes()
        await self.publisher.publish(destination, body, headers, key)
        return {"destination": destination}


def message_headers(event: Event[Any], mode: str, prefix: str) -> dict[str, str]:
    """Headers of an outgoing message: CloudEvents attributes (binary mode), trace and correlation."""
    if mode == "structured":
        headers = {"content-type": "application/cloudevents+json"}
    else:
        headers = event.binary_headers(prefix)
        headers["content-type"] = event.datacontenttype or "application/json"
    if trace.get_current_span().get_span_context().is_valid:
        inject(headers)  # the current attempt's span becomes the consumer's parent
    elif event.traceparent:
        headers["traceparent"] = event.traceparent
        if event.tracestate:
            headers["tracestate"] = event.tracestate
    baggage = event.extensions.get("baggage")
    if "baggage" not in headers and isinstance(baggage, str) and baggage:
        headers["baggage"] = baggage  # the producer's baggage, when no context carried it
    headers["x-correlation-id"] = event.correlationid or event.id
    return headers


def build(cfg: PublishHandlerConfig, env: HandlerEnv) -> PublishHandler:
    publisher = env.publishers.get(cfg.connector)
    if publisher is None:
        raise ValueError(f"connector {cfg.connector!r} has no publisher")
    return PublishHandler(cfg, publisher)
