"""``type: webhook``: database-change and event webhooks, received on the bridge's HTTP server.

One route per connector (``path``, default ``/hooks/<name>``), one provider each:
``supabase``, ``debezium``, ``planetscale``, ``cloudevents`` or ``json`` (see
``connectors.webhook.providers`` for the payloads, the data shape and the event
ids). A request is checked in this order, and nothing is stored unless it passes:

* 413: the declared Content-Length is over ``max_body_bytes``;
* 401: a shared-secret header is missing or wrong;
* 413: the body grows past the limit while it is read;
* 408: the body has not arrived in full within ``server.body_timeout`` (the
  connection is closed);
* 401: an HMAC or Standard Webhooks signature does not match;
* 400: the body is empty, not JSON, or not UTF-8;
* 422: not the provider's shape, a CloudEvents attribute breaks the spec, a template fails, the type is not in the
  catalog, or the data fails its schema (``details`` lists every problem; one
  bad event refuses the whole request). A Debezium record kind with a type of its
  own (heartbeat, transaction boundary, schema change, message, notification,
  tombstone) is never refused for a type the catalog lacks: it is stored, then
  follows ``unrouted`` (Debezium Server stops its connector on a non-2xx answer);
* 200: every event's id was already accepted (a replay): nothing stored again;
  also a Debezium tombstone under ``tombstones: drop`` (the default), which is
  ignored (``tombstones: event`` stores a ``db/tombstone`` event instead);
* 413: an event built from the body would be over the bridge's own limit (the
  inbox would refuse to deliver it);
* 503: the store cannot commit (with ``Retry-After``; the provider retries);
* 202: the events are committed to the inbox.

Authentication is checked before the body is parsed (a signature before it is
even decoded). The limit is enforced while reading, so a missing or lying
Content-Length cannot make the bridge buffer more than the limit; a client that
sends ``Expect: 100-continue`` gets its 413 or 401 before it sends the body. 202
means the events are committed to the store's inbox (the event API's inbox), so
a crash after the answer loses nothing; the inbox then delivers them to handlers.
An unexpected error is answered 422 (while parsing) or 503 (while storing), never
500.

Event attributes: ``type`` from the ``event.type`` template (default
``db/{data.table}.{data.op}`` for supabase and debezium, ``planetscale/{data.event}``
for planetscale; required for json; CloudEvents keep their own; Debezium's
non-row records have fixed types and ignore the templates, see
``bridge.formats.debezium``); ``id`` from ``event.id``, else the provider's id,
else the Standard Webhooks ``webhook-id``, else a content id (supabase), else a
fresh one; ``source`` from ``event.source``, else ``bridge://<name>``;
``time`` from the provider, else now. Templates see ``data`` (the provider's data),
``body`` (the raw JSON), ``header.NAME``, ``meta.provider``, ``meta.webhook_id``
and ``connector``. The correlation id comes from ``event.correlation_id``, else the
CloudEvent's ``correlationid``, else the ``x-correlation-id`` header, else the id;
``traceparent`` from the event or the request.

Modules, each importing only those before it: ``providers`` (what each provider
sends, as candidate events), ``auth`` (shared secrets and signatures),
``config`` (``WebhookConfig``), ``commit`` (group commit to the inbox) and
``receive`` (``WebhookIngress``: the route that checks, parses, validates,
commits and answers).
"""

from __future__ import annotations

from bridge.transport import IngressEnv
from connectors.webhook.auth import WebhookAuth
from connectors.webhook.config import WebhookConfig
from connectors.webhook.providers import PROVIDERS, Provider
from connectors.webhook.receive import WebhookIngress, read_capped


def ingress(cfg: WebhookConfig, name: str, env: IngressEnv) -> WebhookIngress:
    """The ``ConnectorKind.ingress`` factory."""
    return WebhookIngress(cfg, name, env)


__all__ = [
    "PROVIDERS",
    "Provider",
    "WebhookAuth",
    "WebhookConfig",
    "WebhookIngress",
    "ingress",
    "read_capped",
]
