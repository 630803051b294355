"""The config of ``type: webhook``: provider, path, authentication and event mapping."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bridge.templates import DELIVERY_ROOTS, Template, TemplateError
from bridge.transport import ConnectorConfig, EventMapping
from connectors.webhook.auth import WebhookAuth
from connectors.webhook.providers import Provider

_RESERVED = ("/v1/", "/healthz", "/readyz", "/metrics")


class WebhookConfig(ConnectorConfig):
    """Receive webhooks on the bridge's HTTP server and store them as events."""

    type: Literal["webhook"] = Field(
        "webhook", description="Connector kind: webhooks on the bridge's HTTP server."
    )
    provider: Provider = Field(
        description="What sends the webhooks: supabase, debezium, planetscale, cloudevents, json."
    )
    path: str | None = Field(
        None, description="URL path on the bridge's server. Default: `/hooks/<connector name>`."
    )
    auth: WebhookAuth | None = Field(
        None, description="How requests are authenticated. Without it, anyone may post."
    )
    event: EventMapping = Field(
        default_factory=EventMapping,
        description="Event attribute templates over `data`, `body`, `header.NAME`, `meta.NAME`.",
    )
    max_body_bytes: int | None = Field(
        None, ge=1, description="Larger requests are answered 413. Default: the bridge's limit."
    )
    snapshot: Literal["read", "insert"] = Field(
        "read", description="debezium: report snapshot reads (op r) as `read` or as `insert`."
    )

    tombstones: Literal["drop", "event"] = Field(
        "drop",
        description="debezium: a tombstone (empty body or null value) is answered 200 and "
        "dropped (`drop`, the default), or stored as a `db/tombstone` event (`event`).",
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith("/") or any(ch in value for ch in "{}?# "):
            raise ValueError("path is an absolute URL path without variables, e.g. /hooks/users")
        if value.startswith(_RESERVED):
            raise ValueError(f"path {value!r} is taken by the bridge's own API")
        return value

    @model_validator(mode="after")
    def _check(self) -> WebhookConfig:
        if self.provider == "json" and not self.event.type:
            raise ValueError("the json provider needs `event.type` (a template)")
        if self.provider == "planetscale" and self.auth is None:
            raise ValueError("planetscale webhooks are signed: set `auth.secret`")
        for name in ("type", "id", "source", "subject"):
            text = getattr(self.event, name)
            if text is not None:
                try:
                    Template(text, DELIVERY_ROOTS)
                except TemplateError as exc:
                    raise ValueError(f"event.{name}: {exc}") from None
        for ref in self.event.correlation_id:
            if ref.replace(":", ".", 1).partition(".")[0] not in ("header", "data", "meta"):
                raise ValueError(f"event.correlation_id: {ref!r}: use header:NAME or data.PATH")
        return self
