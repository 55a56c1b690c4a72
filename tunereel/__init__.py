"""tunereel: genre + duration + video prompt → an MP4 music video (MusicGen + LTX-Video over gRPC)."""

__version__ = "0.1.0"
