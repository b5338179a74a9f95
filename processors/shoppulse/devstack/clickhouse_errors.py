"""ClickHouse's errors as its HTTP interface reports them: a numeric code, the exception text and
the HTTP status the server derives from the code."""

from __future__ import annotations

import re

_ERROR = re.compile(r"Code:\s*(\d+)\.\s*(?:DB::Exception:\s*)?(.*)", re.S)
_ERROR_NAME = re.compile(r"\(([A-Z_]+)\)\s*(?:\(version [^)]*\))?\s*$")

# ClickHouse error codes used by the endpoint itself.
UNSUPPORTED_METHOD = 1
SYNTAX_ERROR = 62
NOT_IMPLEMENTED = 48
UNKNOWN_SETTING = 115
READONLY = 164
SESSION_IS_LOCKED = 373
SESSION_NOT_FOUND = 372
CANNOT_PARSE_INPUT = 27
AUTHENTICATION_FAILED = 516
STREAMING_NOT_SUPPORTED = 36
STD_EXCEPTION = 1001
CANNOT_PARSE_TEXT = 6
TIMEOUT_EXCEEDED = 159
TOO_MANY_ROWS_OR_BYTES = 396
INTO_OUTFILE_NOT_ALLOWED = 358
INVALID_SESSION_TIMEOUT = 374
SETTING_CONSTRAINT_VIOLATION = 452
ACCESS_DENIED = 497
USER_SESSION_LIMIT_EXCEEDED = 700
HTTP_LENGTH_REQUIRED = 381
SOCKET_TIMEOUT = 209
UNKNOWN_ROLE = 511

# The HTTP status of an error, as ClickHouse's server gives it (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp);
# every other code is 500. Clients and scripts that branch on the status see what a ClickHouse server sends.
_STATUS_BY_CODE = {
    194: 401,  # REQUIRED_PASSWORD
    # UNKNOWN_USER, WRONG_PASSWORD, SET_NON_GRANTED_ROLE, ACCESS_DENIED, AUTHENTICATION_FAILED
    **dict.fromkeys((192, 193, 512, 497, AUTHENTICATION_FAILED), 403),
    # bad arguments, text that does not parse, bad column lists, ASTs too deep or big, type mismatches
    **dict.fromkeys((36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, CANNOT_PARSE_INPUT, 376, 15, 44, 37, 123, 8,
                     167, 168, 223, SYNTAX_ERROR, 117, 53, 321), 400),
    # unknown table, function, identifier, type, storage, database, setting, sorting direction, aggregate
    # function, format, database engine, type of query, role
    **dict.fromkeys((60, 46, 47, 50, 56, 81, UNKNOWN_SETTING, 152, 63, 73, 336, 78, UNKNOWN_ROLE), 404),
    229: 413,  # QUERY_IS_TOO_LARGE
    NOT_IMPLEMENTED: 501,
    **dict.fromkeys((209, 76, 439), 503),  # SOCKET_TIMEOUT, CANNOT_OPEN_FILE, CANNOT_SCHEDULE_TASK
    381: 411,  # HTTP_LENGTH_REQUIRED
    159: 408,  # TIMEOUT_EXCEEDED
    779: 415,  # UNSUPPORTED_MEDIA_TYPE
}


class ClickHouseError(Exception):
    """An error in ClickHouse's terms: a numeric code and the exception text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        text = str(exc).strip()
        text = re.sub(r"^(Streaming (query|insert) (failed|finish failed):\s*)", "", text)
        match = _ERROR.search(text)
        if match is None:
            return cls(1000, text or type(exc).__name__)
        return cls(int(match.group(1)), match.group(2).strip())

    @property
    def name(self) -> str:
        """The error's name as ClickHouse writes it at the end of the text (``UNKNOWN_TABLE``), or its code."""
        match = _ERROR_NAME.search(self.message)
        return match.group(1) if match else str(self.code)

    @property
    def http_status(self) -> int:
        return _STATUS_BY_CODE.get(self.code, 500)

    def body(self, version: str) -> bytes:
        text = self.message
        if _ERROR_NAME.search(text) is None:
            text = f"{text}."
        if "(version " not in text:
            text = f"{text} (version {version})"
        return f"Code: {self.code}. DB::Exception: {text}\n".encode()
