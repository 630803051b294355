"""CloudEvents attributes in AMQP headers, under any binding prefix.

The prefixes tried, on lowercased header names: ``cloudevents:``,
``cloudevents_``, ``ce-`` and ``ce_``. Used for received messages and for the
properties of published ones.
"""

from __future__ import annotations

from collections.abc import Mapping

CE_PREFIXES = ("cloudevents:", "cloudevents_", "ce-", "ce_")


def ce_attribute(lowered: Mapping[str, str], name: str) -> str | None:
    """A CloudEvents attribute from headers with lowercased names, under any binding prefix."""
    for prefix in CE_PREFIXES:
        value = lowered.get(prefix + name)
        if value:
            return value
    return None
