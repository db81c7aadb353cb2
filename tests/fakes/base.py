"""What the adapter contract suite needs of a destination's fake, and the HTTP server the fakes
of JSON APIs are built on: shipped as reverse_etl.testing, so that a plugin's fakes are built
as these are. Every fake here refuses, per record, an `email` without an "@" (each vendor
validates email addresses), with the vendor's own error message."""

from reverse_etl.testing import (
    PROXY_HTML,
    REALISTIC_LATENCY,
    Answer,
    Fake,
    Fault,
    JsonHTTPServer,
    running,
)

__all__ = [
    "PROXY_HTML",
    "REALISTIC_LATENCY",
    "Answer",
    "Fake",
    "Fault",
    "JsonHTTPServer",
    "running",
]
