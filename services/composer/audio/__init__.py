"""The composer's audio: measure (meter), limit (limiter), master a whole clip (master) or a stream (stream), fit the
headroom the AAC encoder needs (headroom, shared by both masters), and run it all beside the video (track).

Only the muxer touches FFmpeg; this package reaches the AAC encoder through `muxer.aac_round_trip`.
"""

from ..muxer import AudioSpec
from .headroom import AacFit, fit_through_aac
from .limiter import Limiter, search_pre_gain
from .master import fade_out, master, master_for_aac
from .meter import IncrementalLoudness, integrated_lufs, peak_envelope, true_peak_dbtp
from .safety import SafetyLimiter
from .stream import StreamingMaster
from .track import AudioTrack, AudioTrackCancelled, AudioTrackError

__all__ = [
    "AacFit",
    "AudioSpec",
    "AudioTrack",
    "AudioTrackCancelled",
    "AudioTrackError",
    "IncrementalLoudness",
    "Limiter",
    "SafetyLimiter",
    "StreamingMaster",
    "fade_out",
    "fit_through_aac",
    "integrated_lufs",
    "master",
    "master_for_aac",
    "peak_envelope",
    "search_pre_gain",
    "true_peak_dbtp",
]
