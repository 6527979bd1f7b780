from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aifactory.config import Settings
from aifactory.input_limits import HttpLimits, uvicorn_options


def test_http_limits_come_from_the_settings() -> None:
    settings = Settings(
        max_header_bytes=2048, max_headers=20, header_timeout_s=3, max_connections=9
    )
    limits = HttpLimits.of(settings)
    assert (limits.max_header_bytes, limits.max_headers, limits.header_timeout_s) == (2048, 20, 3)
    assert limits.body_timeout_s == settings.body_timeout_s


def test_uvicorn_options_use_httptools_with_the_limits() -> None:
    limits = HttpLimits(max_connections=7, keep_alive_timeout_s=3)
    options = uvicorn_options(limits)
    assert issubclass(options["http"], HttpToolsProtocol)
    assert options["http"].limits is limits
    assert options["limit_concurrency"] == 7
    assert options["timeout_keep_alive"] == 3
