"""``bridge test -c FILE CASES.yaml``: unit tests for a config file, without brokers.

Each case hands one message to a connector's normalizer in-process (the same
``Normalizer`` the runtime builds; for a webhook connector, its provider's parser
and mapping, authentication left out), routes the event with the config's handlers
and filters, and, when the case states run outcomes, runs the matched handlers
through the real ``Dispatcher`` with a memory store and a clock that does not
wait (retry delays pass at once, and none is parked; a handler with ``batch``
runs the case's event as a batch of one, at once, but in a timeline (``messages``)
its batches fill and time out on the case's clock; a durable sleep or wait ends
the run ``parked``; ``cancel_on`` adds its ``<id>/cancel`` companion to the
handlers a cancelling event reaches). Handlers named in
``stubs`` return a recorded result or raise a recorded error instead of running.

```yaml
cases:
  - name: a signup reaches every handler
    connector: api                 # a consuming connector, or `api` (the event API)
    message:
      body: {specversion: "1.0", id: s1, type: subscriber/created, data: {...}}
      # or body_file: payloads/signup.json  (relative to the cases file)
      headers: {x-correlation-id: flow-1}
      meta: {topic: signups}
    stubs:
      send-welcome-email: {result: {message_id: m1}}
      create-profile: {error: "RuntimeError: down"}          # fails every attempt
    expect:
      event: {type: subscriber/created, id: s1, correlation_id: flow-1, data: {email: a@b.c}}
      handlers: [send-welcome-email, create-profile]         # exactly these match
      runs:
        send-welcome-email: succeeded
        create-profile: {status: dead_lettered, attempts: 5, error: down}
      emitted: [{type: profile/created}]
  - name: a bad address is rejected
    message: {body: {...}}
    expect: {invalid: schema}      # the reason of the dead letter it becomes
```

``data`` (and ``result``) match as a subset: every key given must be there with
that value; lists must match whole. ``error`` matches as a substring.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

import bridge.jsonio as jsonio
from bridge.config.loading import pydantic_issues
from bridge.config.yamlfile import format_path, line_of, parse
from bridge.duration import Duration
from bridge.errors import ConfigError, ConfigIssue
from bridge.transport import Delivery

RunOutcome = Literal["succeeded", "dead_lettered", "skipped", "parked", "debounced", "cancelled"]
# A field left out of an expectation (``None`` is a value one may expect).
UNSET: Any = object()


class Message(BaseModel):
    """The input message: a JSON value or a string body, headers and transport metadata."""

    model_config = ConfigDict(extra="forbid")

    body: Any = None
    body_file: str | None = Field(
        None, description="Read the body from this file (relative to the cases file) instead."
    )
    headers: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    def delivery(self, connector: str) -> Delivery:
        if self.body_file is not None:
            raw = Path(self.body_file).read_bytes()
        elif isinstance(self.body, str):
            raw = self.body.encode()
        else:
            raw = jsonio.dumps(self.body)
        return Delivery(raw, dict(self.headers), dict(self.meta), connector=connector)


class TimedMessage(Message):
    """A message of a timeline, handed over ``at`` this long after the case began."""

    at: Duration = Field(0.0, description="When, on the case's clock (`0s`, `1500ms`, `2m`).")


class Stub(BaseModel):
    """A handler's recorded behaviour: return ``result``, or raise ``error`` (every
    attempt, or only the first ``fail_attempts``); ``fatal`` raises ``bridge.Fatal``;
    each attempt ``takes`` this long on the case's clock first."""

    model_config = ConfigDict(extra="forbid")

    result: Any = None
    error: str | None = None
    fail_attempts: int | None = Field(None, ge=1)
    fatal: bool = False
    takes: Duration = Field(
        0.0,
        description="How long each attempt runs, on the case's clock: with `messages`, runs "
        "overlap (singleton, concurrency keys, priority, cancel_on) without real time.",
    )


class ExpectEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str | None = None
    id: str | None = None
    source: str | None = None
    subject: str | None = None
    correlation_id: str | None = None
    parent_id: str | None = None
    data: Any = UNSET


class ExpectRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: RunOutcome
    attempts: int | None = Field(
        None,
        ge=0,
        description="Failed attempts recorded: 0 when the first attempt succeeds, 2 for "
        "two failures then a success, all of them for a dead-lettered run.",
    )
    error: str | None = None
    result: Any = UNSET
    started_at: Duration | None = Field(
        None, description="When its first attempt started, on the case's clock (timelines)."
    )
    ended_at: Duration | None = Field(
        None, description="When its last attempt ended, on the case's clock (timelines)."
    )


class ExpectEmitted(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    data: Any = UNSET


class Expect(BaseModel):
    """What must follow; ``event``, ``handlers`` and ``runs`` are about the first event
    (a webhook request may carry several: ``count``)."""

    model_config = ConfigDict(extra="forbid")

    count: int | None = Field(None, ge=0, description="How many events the message became.")

    invalid: str | None = Field(None, description="The message must be rejected with this reason.")
    event: ExpectEvent | None = None
    handlers: list[str] | None = None
    runs: dict[str, RunOutcome | ExpectRun] = Field(default_factory=dict)
    emitted: list[ExpectEmitted] | None = None
    timeline: dict[str, dict[str, RunOutcome | ExpectRun]] = Field(
        default_factory=dict,
        description="With `messages`: event id -> handler id -> how its run ended.",
    )


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    connector: str = "api"
    messages: list[TimedMessage] | None = Field(
        None,
        description="A timeline instead of one `message`: each handed over at its `at` on a "
        "clock the case moves by hand, so throttles, debounces and retries take no real time.",
    )
    message: Message | None = Field(None, validate_default=True)
    stubs: dict[str, Stub] = Field(default_factory=dict)
    run: bool | None = Field(
        None, description="Run the matched handlers; default: when runs or emitted are expected."
    )
    expect: Expect = Field(default_factory=Expect)

    @field_validator("message")
    @classmethod
    def _one_input(cls, value: Message | None, info: ValidationInfo) -> Message | None:
        timeline = info.data.get("messages")
        if value is None and timeline is None and "messages" in info.data:
            raise PydanticCustomError("missing", "Field required")
        if value is not None and timeline is not None:
            raise ValueError("give either `message` or `messages`, not both")
        return value

    def inputs(self) -> list[Message]:
        """The case's message, or its timeline's messages."""
        return [self.message] if self.message is not None else list(self.messages or ())


class CaseFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cases: list[Case]


def _schema() -> dict[str, Any]:
    """The cases file's JSON Schema, for "did you mean" (``UNSET`` defaults are not JSON)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CaseFile.model_json_schema()


def load_cases(path: str | Path) -> list[Case]:
    """Read a cases file.

    Raises:
        ConfigError: unreadable, not YAML, or not the expected shape (with each problem's path).
    """
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read cases: {exc.strerror}")], source) from None
    raw, lines = parse(text, source)  # the config's loader: every problem gets its line
    try:
        cases = CaseFile.model_validate(raw).cases
    except ValidationError as exc:
        issues = pydantic_issues(exc, raw, lines, _schema)
        raise ConfigError(issues, source) from None
    base = Path(path).parent
    missing = []
    for index, case in enumerate(cases):
        for n, message in enumerate(case.inputs()):
            if message.body_file is not None:
                file = base / message.body_file
                message.body_file = str(file)
                if not file.is_file():
                    where: tuple[str | int, ...] = (
                        ("cases", index, "message", "body_file")
                        if case.message is not None
                        else ("cases", index, "messages", n, "body_file")
                    )
                    missing.append(
                        ConfigIssue(format_path(where), f"no file {file}", line_of(lines, where))
                    )
    if missing:
        raise ConfigError(missing, source)
    return cases
