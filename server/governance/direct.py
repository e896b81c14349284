"""The decision API's direct path: `POST /v1/decisions` from a service token, answered without
Flask's request machinery or an ORM session.

Why: the decision API is the one request services make for every action they take, and its
latency is the governance overhead they pay. Measured on the project machine (docs/benchmarks.md,
"Decision API"): the Flask path spends 1.6 to 1.8 ms of its own per decision in a worker; this path
0.6 ms, which is what brings the full API within 2x of a direct call to OPA.

What it does is what the Flask path does, from the same parts: the token cache, the marshmallow
schema, `Gateway.resolve` (authorisation and decision in one OPA query, clamp and re-ask, fail
closed), `Gateway.record_fields` (the record every path writes), the same three statements (kill
switches and counts, the counter upsert, the insert) compiled once for the engine's dialect and
executed on a pooled DB-API connection with SQLAlchemy's own bind processors, so the rows are
stored exactly as the ORM stores them, in one transaction (on SQLite `BEGIN IMMEDIATE`, as the
unit of work does).

It answers only what it can answer completely: a recorded decision (200, or 503 when OPA failed).
Anything else (no bearer token or an unknown one, a body that is not a JSON object, a validation
error, a reserved actor kind, an authorisation refusal, a database error) happens before anything
is committed, and `DecisionDispatcher` hands the request, body replayed, to the Flask view, which
answers it as it always has (problem+json 400/401/403/413/415/500)."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Flask
from marshmallow import ValidationError
from sqlalchemy import Engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from server.auth.services import Subject
from server.errors import Problem
from server.governance import gateway as gw
from server.governance.actions import DecisionRequestSchema
from server.governance.api import FAILED_CLOSED, subject_actor
from server.governance.gateway import Actor, AuthzDenied, AuthzRequest, Gateway, Resolution, build_input
from server.governance.models import Decision
from server.governance.services import caller_action, outcome_fields
from server.observability.logs import request_id_from, request_id_var
from server.observability.metrics import metrics

log = logging.getLogger(__name__)

ENDPOINT = "decisions_api.create_decision"
PATH = "/v1/decisions"
_REQUEST = DecisionRequestSchema()
_HEADERS = (
    ("Content-Type", "application/json"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Prepared:
    """One statement compiled for a dialect, with the bind processors SQLAlchemy would apply."""

    def __init__(self, statement: ClauseElement, engine: Engine) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"{statement!r} does not compile to SQL")
        self.sql = str(compiled)
        self.order: tuple[str, ...] | None = tuple(compiled.positiontup or ()) if compiled.positional else None
        processors: dict[str, Callable[[Any], Any]] = {}
        for key, processor in compiled._bind_processors.items():  # noqa: SLF001
            if not callable(processor):  # tuple binds: none in these statements
                raise TypeError(f"bind {key} of {statement!r} has per-element processors")
            processors[key] = processor
        self.processors = processors

    def params(self, values: Mapping[str, Any]) -> Any:
        processors = self.processors
        if self.order is not None:
            return [processors[key](values[key]) if key in processors else values[key] for key in self.order]
        return {key: (processors[key](value) if key in processors else value) for key, value in values.items()}


class DecisionStatements:
    """The direct path's SQL for one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.begin = "BEGIN IMMEDIATE" if engine.dialect.name == "sqlite" else None
        self.controls_and_counts = Prepared(gw._CONTROLS_AND_COUNTS, engine)  # noqa: SLF001
        self.count_action = Prepared(gw._COUNT_ACTION, engine)  # noqa: SLF001
        self.insert_decision = Prepared(gw._INSERT_DECISION, engine)  # noqa: SLF001


def decide(
    statements: DecisionStatements,
    gateway: Gateway,
    payload: Mapping[str, Any],
    caller: Actor,
    request: AuthzRequest,
) -> tuple[dict[str, Any], Resolution]:
    """Decide and record a service's action (what `governance.decide_for_caller` does through
    the ORM). Raises Problem for a reserved actor and AuthzDenied when the caller may not decide
    (nothing written either way)."""
    started = time.perf_counter()
    action = caller_action(payload, caller)
    dry_run = bool(payload.get("dry_run"))
    now = gateway.clock()
    raw = statements.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if statements.begin:
            cursor.execute(statements.begin)
        prepared = statements.controls_and_counts
        cursor.execute(
            prepared.sql, prepared.params(gw.controls_and_counts_params(action.target, action.actor.id, now))
        )
        controls, counts = gw.controls_and_counts_from(cursor.fetchall(), action.target)
        input_doc = build_input(
            action,
            state=payload.get("state"),
            caller=caller,
            controls=controls,
            counts=counts,
            mode=gateway.mode,
            now=now,
        )
        gateway.forget_opa_decision_id()
        resolution = gateway.resolve(input_doc, request)
        if resolution.allow and not dry_run:
            prepared = statements.count_action
            cursor.execute(prepared.sql, prepared.params(gw.count_action_params(action.actor.id, now)))
        fields = gateway.record_fields(
            action, input_doc, resolution, gateway.last_opa_decision_id(), caller, dry_run, None, now
        )
        fields["latency_ms"] = (time.perf_counter() - started) * 1000.0
        prepared = statements.insert_decision
        cursor.execute(prepared.sql, prepared.params(fields))
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()
    # Committed: nothing below may undo or repeat the decision.
    try:
        if gateway.shadow is not None and resolution.error_code is None:
            gateway.shadow(Decision(**fields))
        metrics().decided(fields["action_type"], fields["outcome"], time.perf_counter() - started)
    except Exception:  # a shadow queue or a metric must not turn a recorded decision into an error
        log.exception("after recording decision %s", fields["id"])
    return fields, resolution


class DecisionDispatcher:
    """WSGI middleware: `POST /v1/decisions` with a bearer token and a JSON body goes the direct
    path; everything else, and every request that path does not answer, to Flask unchanged."""

    def __init__(self, flask_app: Flask, inner: WSGIApp) -> None:
        from server.extensions import services

        self.app = flask_app
        self.inner = inner
        self.services = services(flask_app)
        self._statements: DecisionStatements | None = None
        self._lock = threading.Lock()
        self.max_length = int(flask_app.config.get("MAX_CONTENT_LENGTH") or 0)
        self.answered = 0  # decisions this process answered directly
        self.handed_over = 0  # requests for the path that went to Flask instead

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.inner(environ, start_response)
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if (
            not authorization[:7].lower() == "bearer "
            or content_type != "application/json"
            or length < 0
            or (self.max_length and length > self.max_length)
        ):
            return self.inner(environ, start_response)
        body = environ["wsgi.input"].read(length)
        started = time.perf_counter()
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        token = request_id_var.set(request_id)
        try:
            answer = self._answer(authorization[7:].strip(), body)
        finally:
            request_id_var.reset(token)
        if answer is None:
            self.handed_over += 1
            environ["wsgi.input"] = io.BytesIO(body)
            return self.inner(environ, start_response)
        status, payload = answer
        self.answered += 1
        headers = [*_HEADERS, ("Content-Length", str(len(payload))), ("X-Request-ID", request_id)]
        start_response("200 OK" if status == 200 else "503 SERVICE UNAVAILABLE", headers)
        try:
            metrics().request_answered(ENDPOINT, "POST", status, time.perf_counter() - started)
        except Exception:
            log.exception("request metrics")
        return [payload]

    @property
    def statements(self) -> DecisionStatements:
        """Compiled on first use, after the engine has connected once (a dialect learns its
        server's version and options on its first connection)."""
        if self._statements is None:
            with self._lock:
                if self._statements is None:
                    engine = self.services.db.engine
                    engine.raw_connection().close()
                    self._statements = DecisionStatements(engine)
        return self._statements

    def _answer(self, token: str, body: bytes) -> tuple[int, bytes] | None:
        """(status, JSON body) of a recorded decision, or None for Flask to answer."""
        svc = self.services
        if not token:
            return None
        subject = svc.tokens.resolve(svc.db.session, token)
        if not isinstance(subject, Subject) or subject.kind != "token":
            return None
        try:
            document = json.loads(body)
        except ValueError:
            return None
        if not isinstance(document, dict):
            return None
        try:
            payload = _REQUEST.load(document)
        except ValidationError:
            return None
        request = AuthzRequest(method="POST", endpoint=ENDPOINT, path=PATH, subject=subject.as_input())
        try:
            fields, resolution = decide(self.statements, svc.gateway, payload, subject_actor(subject), request)
        except (Problem, AuthzDenied):
            return None  # nothing written; Flask answers the 400 or asks again and answers 401/403
        except Exception:
            log.warning("direct decision path failed before commit; answering through Flask", exc_info=True)
            return None
        status = 503 if fields["error_code"] in FAILED_CLOSED else 200
        return status, self.app.json.dumps(outcome_fields(fields, resolution)).encode()


def install(app: Flask) -> DecisionDispatcher:
    """Put the dispatcher in front of the app's WSGI callable (after the click dispatcher)."""
    dispatcher = DecisionDispatcher(app, app.wsgi_app)
    app.wsgi_app = dispatcher  # type: ignore[method-assign]
    return dispatcher
