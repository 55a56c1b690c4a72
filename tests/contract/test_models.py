"""GET /v1/models: the gateway asks the composer, the composer asks each backend's DescribeModel, and each backend
answers from its preset table (no model loaded). What comes back drives the UI: the served presets with their
licences, the lyrics box for a singing music model, and which uploads a model cannot take."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tunereel.composer.backends import Backends
from tunereel.composer.compose import Composer
from tunereel.composer.server import ComposerServicer
from tunereel.gateway.app import GatewaySettings, create_app
from tunereel.music.server import MusicServicer
from tunereel.video.server import VideoServicer

from tunereel.launch import free_port
from tunereel.presets import music_preset, video_preset
from tunereel.serving import start_server
from tunereel.v1 import composer_pb2, composer_pb2_grpc, music_pb2, music_pb2_grpc, video_pb2, video_pb2_grpc


def _serve(servicer, add, descriptor, name):
    server = start_server(lambda s: add(servicer, s), [descriptor.DESCRIPTOR.services_by_name[name].full_name],
                          host="127.0.0.1", port=0)  # fmt: skip
    server.set_serving(True)
    return server


@pytest.fixture
def models_of(tmp_path):
    """GET /v1/models of a stack whose music and video services serve the given presets (never loaded)."""
    servers = []

    def get(music: str, video: str):
        servers.append(_serve(MusicServicer(music), music_pb2_grpc.add_MusicServiceServicer_to_server, music_pb2,
                              "MusicService"))  # fmt: skip
        servers.append(_serve(VideoServicer(video), video_pb2_grpc.add_VideoServiceServicer_to_server, video_pb2,
                              "VideoService"))  # fmt: skip
        backends = Backends(f"127.0.0.1:{servers[0].port}", f"127.0.0.1:{servers[1].port}")
        composer = _serve(ComposerServicer(Composer(backends, tmp_path)),
                          composer_pb2_grpc.add_ComposerServiceServicer_to_server, composer_pb2, "ComposerService")
        servers.append(composer)
        app = create_app(GatewaySettings(composer_target=f"127.0.0.1:{composer.port}"))
        with TestClient(app) as client:
            return client.get("/v1/models")

    yield get
    for server in servers:
        server.stop(0)


@pytest.mark.parametrize(
    "music, video, sings, hears",
    [("tiny", "tiny", False, False), ("tiny-ace-step", "tiny-ltx2", True, True), ("melody", "ltx-2b", False, False)],
)
def test_models_says_what_each_served_preset_takes_and_its_licence(models_of, music, video, sings, hears):
    reply = models_of(music, video)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    music_p, video_p = music_preset(music), video_preset(video)
    assert body["music"] == {"preset": music, "family": music_p.family, "license": music_p.license, "sings": sings,
                             "follows_melody": music == "melody", "repaints": sings}  # fmt: skip
    assert body["video"] == {"preset": video, "family": video_p.family, "license": video_p.license,
                             "hears_audio": hears, "takes_image": True,  # LTX-2 too: a frame condition
                             "max_frames_per_pass": video_p.max_frames}  # fmt: skip
    assert body["music"]["license"] and body["video"]["license"]


def test_an_unknown_served_preset_is_a_503_naming_the_service(models_of):
    reply = models_of("no-such-preset", "tiny")
    assert reply.status_code == 503 and "music service" in reply.json()["error"], reply.text


def test_models_without_a_composer_is_503():
    app = create_app(GatewaySettings(composer_target=f"127.0.0.1:{free_port()}"))
    with TestClient(app) as client:
        reply = client.get("/v1/models")
    assert reply.status_code == 503 and reply.json()["code"] == "UNAVAILABLE"
