"""Vertex AI (generator.backend=vertex) and the environment switch that silently moves the SDK there.

Application-default credentials are real google-auth credentials read from GOOGLE_APPLICATION_CREDENTIALS:
an ``authorized_user`` file whose token endpoint is the local server, so google-auth's own refresh runs."""

from __future__ import annotations

import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import read_manifest
from cxrsyn.generate.run import generate
from cxrsyn.testing.fake_gemini import ACCESS_TOKEN, FakeGemini
from tests.generate.conftest import KEY
from tests.generate.test_nano_banana import compose, overrides

VERTEX = {
    "generator.backend": "vertex",
    "generator.project": "cxr-project",
    "generator.location": "us-central1",
}


@pytest.fixture
def adc(monkeypatch, tmp_path):
    """Application-default credentials pointing at the server given to the returned function; an API key and
    the Vertex switch in the environment too, to show which one is used."""
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # google-auth must not probe a metadata server

    def point_at(server: FakeGemini) -> None:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", server.adc_file(tmp_path))

    return point_at


def generated_paths(server: FakeGemini) -> set[str]:
    return {entry["path"] for entry in server.requests if entry["kind"] == "generate"}


def test_vertex_generates_online_with_application_default_credentials(tmp_path, adc):
    with FakeGemini() as server:
        adc(server)
        summary = generate(compose(overrides(server, tmp_path / "out", 1, **VERTEX)))
        assert generated_paths(server) == {
            "/v1beta1/projects/cxr-project/locations/us-central1/publishers/google/models/"
            "gemini-2.5-flash-image:generateContent"
        }
        assert server.bearer_tokens == {ACCESS_TOKEN} and server.token_requests >= 1
        assert server.api_keys == set()  # no API key goes to Vertex
    assert summary["kept"] == 2 and len(read_manifest(tmp_path / "out")) == 2
    for path in (tmp_path / "out").rglob("*"):  # neither the token nor the key reaches a file
        if path.is_file():
            assert ACCESS_TOKEN.encode() not in path.read_bytes() and KEY.encode() not in path.read_bytes()


def test_vertex_batch_is_refused_in_one_line(tmp_path, adc):
    with FakeGemini() as server:
        adc(server)
        for extra in ({}, {"dry_run": True}):
            with pytest.raises(CxrsynError) as raised:
                generate(
                    compose(overrides(server, tmp_path, 1, **VERTEX, **{"generator.batch": True}, **extra))
                )
            message = str(raised.value)
            assert (
                "\n" not in message
                and "generator.batch=true is not available with generator.backend=vertex" in message
            )
            assert "generator.batch=false" in message and "generator.backend=gemini" in message
        assert server.requests == []


def test_vertex_without_credentials_stops_before_any_request(tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-adc.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    with FakeGemini() as server:
        with pytest.raises(
            CxrsynError, match="needs application-default credentials .*gcloud auth application-default login"
        ):
            generate(compose(overrides(server, tmp_path / "out", 1, **VERTEX)))
        assert server.requests == []


@pytest.mark.parametrize("switch", ["GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE"])
def test_the_vertex_switch_does_not_move_a_gemini_run(tmp_path, monkeypatch, capsys, switch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv(switch, "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "cxr-project")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")
    with FakeGemini() as server:
        generate(compose(overrides(server, tmp_path, 1)))  # backend: gemini, the default
        # the Gemini API's path (/v1/models/... or /v1beta/models/...), not Vertex's, with or without a
        # project (Vertex express mode would send the key to /v1beta1/publishers/google/models/...)
        (path,) = generated_paths(server)
        assert path.split("/")[2] == "models" and path.endswith(
            "/models/gemini-2.5-flash-image:generateContent"
        )
        assert "publishers" not in path and "/projects/" not in path
        assert server.api_keys == {KEY} and server.bearer_tokens == set()
    assert f"{switch} is set, but generator.backend=gemini: using the Gemini API" in capsys.readouterr().out
