"""What counts as a secret, and masking it in text a user will read.

A value is a secret when:

* it sits under a secret-bearing key (``token``, ``password``, ``secret``,
  ``secrets``, ``api_key``, ``authorization``, ``sasl_password`` ...), written
  literally or through ``${...}``;
* it came from ``${secret:NAME}`` (the user marks it), from ``${file:PATH}``
  (mounted secret files), or from ``${NAME}`` whose name says it is one
  (``..._TOKEN``, ``..._PASSWORD``, ``..._SECRET``, ``..._KEY``, ``..._PWD``,
  ``..._CREDENTIALS``);
* it is the password of a URL (``scheme://user:password@host``): only that
  part is masked, the user and host stay readable.

Everything else (a port from ``${PORT}``, a host from ``${KAFKA_BOOTSTRAP}``)
is shown as written, so a message like ``127.0.0.1:8787`` stays readable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s'\"]*:)[^@\s'\"]+@")
_SECRET_KEY = re.compile(
    r"token|secret|passw(or)?d|pwd|api[_-]?key|access[_-]?key|private[_-]?key|signing[_-]?key"
    r"|credential|authorization",
    re.I,
)
_SECRET_ENV = re.compile(
    r"secret|token|passw(or)?d|credential|apikey|(^|_)(key|pwd|pw|auth)(_|$)", re.I
)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it (``scheme://user:password@``)
    replaced by ``***``: for error messages that quote a broker or store URL."""
    return _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)


def is_secret_key(key: str) -> bool:
    """Whether a config key holds a secret (``token``, ``sasl_password``, ``secrets``)."""
    return _SECRET_KEY.search(key) is not None


def is_secret_env(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret (``API_TOKEN``)."""
    return _SECRET_ENV.search(name) is not None


def url_password(value: str) -> str | None:
    """The password of the URLs in ``value`` (the first one), or None."""
    match = _URL_PASSWORD.search(value)
    if match is None:
        return None
    return match.group(0)[len(match.group("head")) : -1]


class Masker:
    """Masks known secret values, and every URL password, in text.

    A value of four characters or more is masked wherever it occurs; one of three
    only as a whole word, so a secret ``abc`` does not garble ``abcdef``; shorter
    ones protect nothing and would garble every message, so they are left.
    """

    def __init__(self, values: Iterable[str]) -> None:
        self._values = sorted({v for v in values if len(v) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = redact(text)
        for value in self._values:
            if len(value) >= 4:
                text = text.replace(value, MASK)
            else:
                text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", MASK, text)
        return text
