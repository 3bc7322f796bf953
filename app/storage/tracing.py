"""Client spans for the database: one per SQL statement, from SQLAlchemy's engine events.

The span records the statement with its placeholders, never the bound values, so the hashes,
prompts and ids passed as parameters stay out of traces.
"""

from __future__ import annotations

import functools
from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode, TracerProvider, get_current_span
from sqlalchemy import event
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.engine.interfaces import DBAPICursor, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine

SPAN_KEY = "visioncraft_span"
DB_SYSTEM_NAMES = {"postgresql": "postgresql", "sqlite": "sqlite"}


def trace_statements(engine: AsyncEngine, tracer_provider: TracerProvider) -> None:
    """Give each statement that `engine` executes a span from `tracer_provider`."""
    tracer = tracer_provider.get_tracer(__name__)
    url = engine.url
    system = DB_SYSTEM_NAMES.get(url.get_backend_name(), url.get_backend_name())
    base_attributes: dict[str, str | int] = {"db.system.name": system}
    if system != "sqlite":
        if url.database:
            base_attributes["db.namespace"] = url.database
        if url.host:
            base_attributes["server.address"] = url.host
        if url.port:
            base_attributes["server.port"] = url.port
    target = base_attributes.get("db.namespace", system)

    def before_cursor_execute(
        conn: Connection,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        if context is None:
            return
        parent = get_current_span().get_span_context()
        if parent.is_valid and not parent.trace_flags.sampled:
            # The request's trace is not sampled, so neither is this span: skip its cost.
            return
        operation = operation_name(statement)
        span = tracer.start_span(
            f"{operation} {target}",
            kind=SpanKind.CLIENT,
            attributes={
                **base_attributes,
                "db.operation.name": operation,
                "db.query.text": statement,
            },
        )
        context.__dict__[SPAN_KEY] = span

    def after_cursor_execute(
        conn: Connection,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        span: Span | None = context.__dict__.pop(SPAN_KEY, None) if context else None
        if span is not None:
            span.end()

    def handle_error(exception_context: ExceptionContext) -> None:
        context = exception_context.execution_context
        span: Span | None = context.__dict__.pop(SPAN_KEY, None) if context else None
        if span is None:
            return
        span.set_attribute("error.type", type(exception_context.original_exception).__qualname__)
        span.set_status(StatusCode.ERROR)
        span.end()

    sync_engine = engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", before_cursor_execute)
    event.listen(sync_engine, "after_cursor_execute", after_cursor_execute)
    event.listen(sync_engine, "handle_error", handle_error)


@functools.lru_cache(maxsize=512)
def operation_name(statement: str) -> str:
    """Return the statement's first keyword (SELECT, INSERT, ...), cached per statement text."""
    return statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
