"""Records as Debezium and Supabase document them, for the CDC tests.

Sources (debezium/debezium at aad5519, debezium/debezium-server, supabase):

* ``PG_INSERT`` ...: documentation/modules/ROOT/pages/connectors/postgresql.adoc,
  "Data change events" (the ``customers`` examples; also in test_webhook_providers).
* ``TX_BEGIN``, ``TX_END``: postgresql.adoc, "Transaction metadata" example.
* ``HEARTBEAT``: debezium-connector-common HeartbeatImpl.messageValue() (one field
  ``ts_ms``) and SchemaFactory (schema name ``io.debezium.connector.common.Heartbeat``);
  the docs describe heartbeats without printing one.
* ``MYSQL_SCHEMA_CHANGE``: documentation/modules/ROOT/partials/modules/all-connectors/
  shared-mariadb-mysql.adoc, "Message emitted to the connector schema change topic"
  (``{context}`` = mysql; the ``columns`` list shortened to two entries).
* ``PG_MESSAGE_TX``, ``PG_MESSAGE``: postgresql.adoc, "_message_ events" (the second
  example lacks a closing brace in the docs; closed here).
* ``CE_PG_READ``: documentation/modules/ROOT/pages/integrations/cloudevents.adoc,
  "Example event format" (JSON envelope, JSON data), as Debezium Server's HTTP sink
  posts it with ``debezium.format.value=cloudevents`` (content type
  ``application/cloudevents+json``: debezium-server-http HttpChangeConsumer).
* ``MONGO_*``: documentation/modules/ROOT/pages/connectors/mongodb.adoc, create and
  update events (the update without ``before``/``after``, as the default capture
  mode without pre- and post-images writes it).
* ``NOTIFICATION``: documentation/modules/ROOT/pages/configuration/notification.adoc,
  "notifications about the status of an initial snapshot" (sent through the sink, so
  through Debezium Server's HTTP sink, with ``notification.enabled.channels=sink``).
* ``SUPABASE_*``: supabase's ``supabase_functions.http_request`` trigger
  (``jsonb_build_object('old_record', OLD, 'record', NEW, 'type', TG_OP, 'table',
  TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA)``) and the Database Webhooks guide.
"""

from __future__ import annotations

from typing import Any

from tests.unit.test_webhook_providers import (
    ANNE,
    ANNE_2,
    SUPABASE_DELETE,
    SUPABASE_INSERT,
    SUPABASE_UPDATE,
    debezium,
    envelope,
)

__all__ = [
    "ANNE",
    "ANNE_2",
    "CE_PG_READ",
    "CE_PG_READ_AS_JSON",
    "HEARTBEAT",
    "HEARTBEAT_ENVELOPE",
    "MONGO_CREATE",
    "MONGO_UPDATE_DESCRIPTION_ONLY",
    "MYSQL_SCHEMA_CHANGE",
    "NOTIFICATION",
    "PG_MESSAGE",
    "PG_MESSAGE_TX",
    "SUPABASE_DELETE",
    "SUPABASE_INSERT",
    "SUPABASE_UPDATE",
    "TX_BEGIN",
    "TX_END",
    "debezium",
    "envelope",
]

TX_BEGIN = {
    "status": "BEGIN",
    "id": "571:53195829",
    "ts_ms": 1486500577125,
    "event_count": None,
    "data_collections": None,
}
TX_END = {
    "status": "END",
    "id": "571:53195832",
    "ts_ms": 1486500577691,
    "event_count": 2,
    "data_collections": [
        {"data_collection": "s1.a", "event_count": 1},
        {"data_collection": "s2.a", "event_count": 1},
    ],
}

HEARTBEAT = {"ts_ms": 1714742400123}
HEARTBEAT_ENVELOPE = {
    "schema": {
        "type": "struct",
        "fields": [{"type": "int64", "optional": False, "field": "ts_ms"}],
        "optional": False,
        "name": "io.debezium.connector.common.Heartbeat",
    },
    "payload": HEARTBEAT,
}

MYSQL_SCHEMA_CHANGE = {
    "schema": {},
    "payload": {
        "source": {
            "version": "2.7.0.Final",
            "connector": "mysql",
            "name": "mysql",
            "ts_ms": 1651535750218,
            "ts_us": 1651535750218000,
            "ts_ns": 1651535750218000000,
            "snapshot": "false",
            "db": "inventory",
            "sequence": None,
            "table": "customers",
            "server_id": 223344,
            "gtid": None,
            "file": "mysql-bin.000003",
            "pos": 570,
            "row": 0,
            "thread": None,
            "query": None,
        },
        "databaseName": "inventory",
        "schemaName": None,
        "ddl": "ALTER TABLE customers ADD middle_name varchar(255) AFTER first_name",
        "tableChanges": [
            {
                "type": "ALTER",
                "id": '"inventory"."customers"',
                "table": {
                    "defaultCharsetName": "utf8mb4",
                    "primaryKeyColumnNames": ["id"],
                    "columns": [
                        {
                            "name": "id",
                            "jdbcType": 4,
                            "nativeType": None,
                            "typeName": "INT",
                            "typeExpression": "INT",
                            "charsetName": None,
                            "length": None,
                            "scale": None,
                            "position": 1,
                            "optional": False,
                            "autoIncremented": True,
                            "generated": True,
                        },
                        {
                            "name": "middle_name",
                            "jdbcType": 12,
                            "nativeType": None,
                            "typeName": "VARCHAR",
                            "typeExpression": "VARCHAR",
                            "charsetName": "utf8mb4",
                            "length": 255,
                            "scale": None,
                            "position": 3,
                            "optional": True,
                            "autoIncremented": False,
                            "generated": False,
                        },
                    ],
                    "attributes": [{"customAttribute": "attributeValue"}],
                },
            }
        ],
    },
}

_MESSAGE_SOURCE = {
    "version": "2.7.0.Final",
    "connector": "postgresql",
    "name": "PostgreSQL_server",
    "ts_ms": 1559033904863,
    "ts_us": 1559033904863879,
    "ts_ns": 1559033904863879000,
    "snapshot": False,
    "db": "postgres",
    "schema": "",
    "table": "",
    "txId": 556,
    "lsn": 46523128,
    "xmin": None,
}
PG_MESSAGE_TX = {
    "schema": {},
    "payload": {
        "source": _MESSAGE_SOURCE,
        "op": "m",
        "ts_ms": 1559033904961,
        "ts_us": 1559033904961621,
        "ts_ns": 1559033904961621379,
        "message": {"prefix": "foo", "content": "Ymfy"},
    },
}
PG_MESSAGE = {
    "schema": {},
    "payload": {
        "source": {
            k: v for k, v in _MESSAGE_SOURCE.items() if k != "txId"
        },  # non-transactional: no txId
        "op": "m",
        "ts_ms": 1559033904961,
        "ts_us": 1559033904961741,
        "ts_ns": 1559033904961741698,
        "message": {"prefix": "foo", "content": "Ymfy"},
    },
}

CE_PG_READ: dict[str, Any] = {
    "id": "name:test_server;lsn:29274832;txId:565",
    "source": "/debezium/postgresql/test_server",
    "specversion": "1.0",
    "type": "io.debezium.connector.postgresql.DataChangeEvent",
    "time": "2020-01-13T13:55:39.738Z",
    "datacontenttype": "application/json",
    "iodebeziumop": "r",
    "iodebeziumversion": "2.7.0.Final",
    "iodebeziumconnector": "postgresql",
    "iodebeziumname": "test_server",
    "iodebeziumtsms": "1578923739738",
    "iodebeziumsnapshot": "true",
    "iodebeziumdb": "postgres",
    "iodebeziumschema": "s1",
    "iodebeziumtable": "a",
    "iodebeziumlsn": "29274832",
    "iodebeziumxmin": None,
    "iodebeziumtxid": "565",
    "iodebeziumtxtotalorder": "1",
    "iodebeziumtxdatacollectionorder": "1",
    "data": {"before": None, "after": {"pk": 1, "name": "Bob"}},
}
# The same change as the JSON format writes it (postgresql.adoc's envelope, with the
# source block the CloudEvent's iodebezium* attributes carry).
CE_PG_READ_AS_JSON = {
    "before": None,
    "after": {"pk": 1, "name": "Bob"},
    "source": {
        "version": "2.7.0.Final",
        "connector": "postgresql",
        "name": "test_server",
        "ts_ms": 1578923739738,
        "snapshot": "true",
        "db": "postgres",
        "schema": "s1",
        "table": "a",
        "lsn": "29274832",
        "xmin": None,
    },
    "op": "r",
    "ts_ms": 1578923739738,
    "transaction": {"id": "565", "total_order": 1, "data_collection_order": 1},
}

# documentation/modules/ROOT/pages/connectors/mongodb.adoc, "create" and "update" event
# examples (the create example repeats "ts_ms" three times: written as ts_ms/us/ns here).
_MONGO_SOURCE = {
    "version": "2.7.0.Final",
    "connector": "mongodb",
    "name": "fulfillment",
    "ts_ms": 1558965508000,
    "ts_us": 1558965508000000,
    "ts_ns": 1558965508000000000,
    "snapshot": False,
    "db": "inventory",
    "rs": "rs0",
    "collection": "customers",
    "ord": 31,
    "h": 1546547425148721999,
}
MONGO_CREATE = {
    "schema": {},
    "payload": {
        "after": '{"_id" : {"$numberLong" : "1004"},"first_name" : "Anne","last_name" : '
        '"Kretchmar","email" : "annek@noanswer.org"}',
        "source": _MONGO_SOURCE,
        "op": "c",
        "ts_ms": 1558965515240,
        "ts_us": 1558965515240142,
        "ts_ns": 1558965515240142879,
    },
}
MONGO_UPDATE_DESCRIPTION_ONLY = {
    "op": "u",
    "ts_ms": 1465491461815,
    "updateDescription": {
        "removedFields": None,
        "updatedFields": '{"first_name": "Anne Marie"}',
        "truncatedArrays": None,
    },
    "source": {**_MONGO_SOURCE, "ord": 1},
}

NOTIFICATION = {
    "id": "5563ae14-49f8-4579-9641-c1bbc2d76f99",
    "aggregate_type": "Initial Snapshot",
    "type": "COMPLETED",
    "additional_data": {"connector_name": "myConnector"},
    "timestamp": "1695817046353",
}
