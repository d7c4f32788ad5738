"""Small server parts: error → status mapping, field names, settings from env and flags, client error parsing."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")

from qrank import InvalidInput, ModelNotFound, Overloaded, QrankError, Settings, TooLarge, UnsupportedModel  # noqa: E402
from qrank.models.remote import ServerUnavailable, error_from_response  # noqa: E402
from qrank.server.errors import (  # noqa: E402
    ClientGone,
    HeadersTooLarge,
    MalformedBody,
    NonFiniteOutput,
    ShuttingDown,
    Unauthorized,
    field_of,
    status_for,
)


@pytest.mark.parametrize(
    "exc,status",
    [
        (InvalidInput("query", "x"), 422),
        (MalformedBody("x"), 400),
        (ModelNotFound("x"), 404),
        (UnsupportedModel("x"), 400),
        (TooLarge("x", field="body"), 413),
        (HeadersTooLarge(20000, 16384), 431),
        (Overloaded(), 429),
        (ShuttingDown(), 503),
        (Unauthorized(), 401),
        (NonFiniteOutput("x"), 500),
        (ClientGone("x"), 499),
        (QrankError("x"), 500),
        (RuntimeError("x"), 500),
    ],
)
def test_status_mapping(exc, status):
    assert status_for(exc) == status


def test_field_of():
    assert field_of(("body", "documents", 3)) == "documents[3]"
    assert field_of(("body", "input", 0)) == "input[0]"
    assert field_of(("body", 17)) == "[17]"
    assert field_of(("body",)) == "body"
    assert field_of(("query", "limit")) == "limit"


def test_server_settings_from_env(monkeypatch):
    monkeypatch.setenv("QRANK_SERVER__RERANKERS", "a/b,c")
    monkeypatch.setenv("QRANK_SERVER__EMBEDDERS", '["e"]')
    monkeypatch.setenv("QRANK_SERVER__MAX_QUEUE", "7")
    monkeypatch.setenv("QRANK_SERVER__TRUNCATE", "false")
    s = Settings().server
    assert s.rerankers == ["a/b", "c"] and s.embedders == ["e"] and s.max_queue == 7 and s.truncate is False
    assert s.host == "127.0.0.1"


def test_serve_flags_override_env(monkeypatch):
    from qrank.cli import build_parser
    from qrank.cli.common import settings_from_args

    monkeypatch.setenv("QRANK_SERVER__PORT", "9000")
    monkeypatch.setenv("QRANK_SERVER__MAX_WAIT_MS", "3")
    args = build_parser().parse_args(
        [
            "serve",
            "--reranker",
            "r1",
            "--reranker",
            "r2",
            "--embedder",
            "e1",
            "--served-model-name",
            "x",
            "--max-wait-ms",
            "7.5",
            "--api-key",
            "k",
            "--no-truncate",
            "--device",
            "cpu",
        ]
    )
    s = settings_from_args(args)
    assert s.server.rerankers == ["r1", "r2"] and s.server.embedders == ["e1"] and s.server.served_model_names == ["x"]
    assert (
        s.server.port == 9000 and s.server.max_wait_ms == 7.5 and s.server.api_key == "k" and s.server.truncate is False
    )
    assert s.models.device == "cpu"


def test_empty_api_key_is_refused():
    from qrank.server import create_app

    with pytest.raises(InvalidInput) as err:
        create_app(Settings(server={"api_key": "  "}))
    assert err.value.field == "server.api_key"


def _response(status: int, body, headers=None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers or {}, request=httpx.Request("POST", "http://x/v1/rerank"))


def test_client_reads_other_servers_error_bodies():
    qrank_body = {"error": {"type": "InvalidInput", "message": "documents[1]: bad", "field": "documents[1]"}}
    err = error_from_response(_response(422, qrank_body))
    assert isinstance(err, InvalidInput) and err.field == "documents[1]" and "422" in str(err)
    vllm_body = {"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}
    assert isinstance(error_from_response(_response(404, vllm_body)), ModelNotFound)
    tei_body = {"error": "Input validation error: `inputs` cannot be empty", "error_type": "Validation"}
    err = error_from_response(_response(422, tei_body))
    assert isinstance(err, InvalidInput) and "cannot be empty" in str(err)
    err = error_from_response(_response(429, {"message": "busy"}, {"retry-after": "7"}))
    assert isinstance(err, Overloaded) and err.retry_after == 7
    err = error_from_response(_response(502, {"detail": "bad gateway"}))
    assert isinstance(err, ServerUnavailable) and err.status_code == 502


def test_every_server_setting_is_documented():
    from pathlib import Path

    from qrank.settings import ServerSettings

    doc = (Path(__file__).parents[2] / "docs" / "server.md").read_text()
    missing = [name for name in ServerSettings.model_fields if f"| `{name}` |" not in doc]
    assert not missing, f"docs/server.md lacks rows for {missing}"
