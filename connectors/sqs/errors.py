"""SQS errors as ``ConnectorError``: which ones retrying can fix, and which it cannot."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.errors import ConnectorError

# Errors that the same call cannot outgrow: a typo, missing rights or credentials.
_FATAL_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidSecurity",
        "InvalidAddress",
        "InvalidParameterValue",
        "MissingParameter",
        "InvalidAttributeName",
        "InvalidMessageContents",
        "AWS.SimpleQueueService.UnsupportedOperation",
        "UnsupportedOperation",
        "KmsAccessDenied",
        "KmsDisabled",
        "KmsInvalidKeyUsage",
        "KmsNotFound",
    }
)
_FATAL_SDK_ERRORS = (
    "NoCredentialsError",
    "PartialCredentialsError",
    "NoRegionError",
    "ParamValidationError",
    "InvalidRegionError",
    "UnknownServiceError",
)


def wrap_error(exc: BaseException, action: str) -> ConnectorError:
    """A ``ConnectorError`` for an SDK, HTTP or socket error, with ``retriable`` set."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping) and "Error" in response:
        error = response.get("Error") or {}
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or str(exc)
        return ConnectorError(
            f"SQS {action}: {code}: {message}", retriable=code not in _FATAL_CODES
        )
    name = type(exc).__name__
    fatal = name in _FATAL_SDK_ERRORS
    return ConnectorError(f"SQS {action}: {name}: {exc}", retriable=not fatal)
