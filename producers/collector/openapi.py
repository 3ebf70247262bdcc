"""The collector's OpenAPI 3.1 description, generated from the event model."""

from __future__ import annotations

from typing import Any

from funnel.events import Event
from producers.collector.settings import CollectorSettings

__all__ = ["openapi_document"]


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def openapi_document(settings: CollectorSettings) -> dict[str, Any]:
    """OpenAPI for ``/v1/batch``, ``/v1/event`` and ``/v1/p.gif``."""
    schema = Event.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    batch_result = {
        "type": "object",
        "required": ["accepted", "rejected"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "rejected": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "errors"],
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "errors": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/FieldError"},
                        },
                    },
                },
            },
        },
    }
    common = {
        "401": _error("No valid write key"),
        "413": _error("Body over the size limit"),
        "415": _error("Unsupported content type or encoding"),
        "503": {
            "description": "Not stored; retry after the Retry-After header's seconds",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        },
    }
    body_content = {
        kind: {
            "schema": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Event"},
                "maxItems": settings.max_batch,
            }
        }
        for kind in ("application/json", "text/plain")
    }
    single_content = {
        kind: {"schema": {"$ref": "#/components/schemas/Event"}}
        for kind in ("application/json", "text/plain")
    }
    results = {
        "200": {
            "description": "At least one event accepted and durable; rejected items listed",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/BatchResult"}}
            },
        },
        "400": {
            "description": "Every item rejected, or the body is not a batch",
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/BatchResult"},
                            {"$ref": "#/components/schemas/Problem"},
                        ]
                    }
                }
            },
        },
        **common,
    }
    key_param = {
        "name": "key",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "Write key (or the X-Funnel-Key header)",
    }
    pixel_params = [
        key_param,
        {"name": "type", "in": "query", "schema": {"enum": ["impression", "click"]}},
        {"name": "aid", "in": "query", "schema": {"type": "string"}, "description": "anonymous_id"},
        {"name": "cid", "in": "query", "schema": {"type": "string"}, "description": "customer_id"},
        {"name": "eid", "in": "query", "schema": {"type": "string"}, "description": "event_id"},
        {"name": "ts", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        *(
            {"name": name, "in": "query", "schema": {"type": "string"}}
            for name in (
                "url",
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "utm_term",
                "utm_content",
                "gclid",
                "fbclid",
                "msclkid",
            )
        ),
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "funnel collector", "version": "1"},
        "components": {
            "securitySchemes": {
                "writeKey": {"type": "apiKey", "in": "header", "name": "X-Funnel-Key"},
            },
            "schemas": {
                **definitions,
                "Event": schema,
                "FieldError": {
                    "type": "object",
                    "required": ["field", "reason", "code"],
                    "properties": {
                        "field": {"type": "string"},
                        "reason": {"type": "string"},
                        "code": {"type": "string"},
                    },
                },
                "BatchResult": batch_result,
                "Problem": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
        "security": [{"writeKey": []}],
        "paths": {
            "/v1/batch": {
                "post": {
                    "summary": "Send a batch of events",
                    "parameters": [key_param],
                    "requestBody": {"required": True, "content": body_content},
                    "responses": results,
                }
            },
            "/v1/event": {
                "post": {
                    "summary": "Send one event",
                    "parameters": [key_param],
                    "requestBody": {"required": True, "content": single_content},
                    "responses": results,
                }
            },
            "/v1/p.gif": {
                "get": {
                    "summary": "Tracking pixel for impressions and clicks",
                    "parameters": pixel_params,
                    "responses": {
                        "200": {"description": "Recorded", "content": {"image/gif": {}}},
                        "400": results["400"],
                        **common,
                    },
                }
            },
        },
    }
