"""Video I/O for LeRobot datasets with PyAV: encode RGB frames to mp4, decode frames at timestamps.

h264 by default (libx264 encodes ~10x faster than AV1 on a CPU); codec="av1"
uses SVT-AV1 / libaom when the bundled FFmpeg has one (`available_av1_encoder()`).
Both decode through PyAV (dav1d for AV1). `av` is imported lazily: reading a
dataset without video features needs no FFmpeg.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from syvla.data.schema import SchemaError

CODECS = ("h264", "av1")


def available_av1_encoder() -> str | None:
    """Name of an AV1 encoder in PyAV's bundled FFmpeg, or None."""
    import av

    for name in ("libsvtav1", "libaom-av1", "librav1e"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001  (av raises UnknownCodecError/ValueError by version)
            continue
    return None


def encoder_for(codec: str) -> str:
    if codec == "h264":
        return "h264"  # PyAV maps this to libx264
    if codec == "av1":
        enc = available_av1_encoder()
        if enc is None:
            raise ValueError("codec='av1' but PyAV's FFmpeg has no AV1 encoder (libsvtav1, libaom-av1, librav1e)")
        return enc
    raise ValueError(f"codec must be 'h264' or 'av1', got {codec!r}")


class VideoWriter:
    """Appends RGB frames to one mp4 at constant fps; frame k has pts k (time k / fps)."""

    def __init__(self, path: Path, fps: float, height: int, width: int, codec: str, crf: int, gop: int):
        import av

        # SVT-AV1 prints a banner per stream to stderr unless told to log errors only.
        os.environ.setdefault("SVT_LOG", "1")
        if height % 2 or width % 2:
            raise SchemaError(f"video {path}: yuv420p needs even image sizes, got {height}x{width}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.container = av.open(str(path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream(encoder_for(codec), rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = 1 / rate
        # Short GOPs make seeking to an episode cheap (LeRobot uses g=2 as well).
        opts = {"crf": str(crf), "g": str(gop)}
        if self.stream.codec_context.name == "libsvtav1":
            opts["preset"] = "10"  # a fast SVT-AV1 preset; quality is set by crf
        self.stream.options = opts
        self.frames = 0
        self.size = (height, width)

    def add(self, img: np.ndarray) -> None:
        import av

        if img.shape[:2] != self.size:
            raise SchemaError(f"video {self.path}: frame of size {img.shape[:2]} in a {self.size} video")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:, :, :3]), format="rgb24")
        frame.pts = self.frames
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


class VideoError(SchemaError):
    """A video that cannot be opened or decoded, or lacks a frame asked for. The message says what
    went wrong but not where: the LeRobot reader adds the file, episode and camera (EpisodeError)."""


class VideoReader:
    """Decodes the frames of one mp4 at given timestamps (seconds), seeking first.

    Every PyAV failure (open, seek, demux, decode) surfaces as VideoError: FFmpeg's own errors
    (av.error.InvalidDataError ...) name neither the file nor the frame."""

    def __init__(self, path: Path):
        import av

        self.path = path
        try:
            self.container = av.open(str(path))
        except av.error.FFmpegError as e:
            raise VideoError(f"cannot open the video: {_ffmpeg_message(e)}") from e
        if not self.container.streams.video:
            self.container.close()
            raise VideoError("the file holds no video stream")
        self.stream = self.container.streams.video[0]
        self.height, self.width = self.stream.codec_context.height, self.stream.codec_context.width
        # Frames the container declares (mp4: from its sample table); 0 when it does not say.
        self.frame_count = int(self.stream.frames or 0)

    def frames_at(self, times: np.ndarray, fps: float) -> list[np.ndarray]:
        """uint8 HWC frames [H, W, 3] whose time matches each of `times` (ascending) within 0.4 frame."""
        import av

        try:
            return list(self._frames_at(times, fps))
        except av.error.FFmpegError as e:
            raise VideoError(f"decoding failed between {times[0]:.4f} s and {times[-1]:.4f} s: "
                             f"{_ffmpeg_message(e)}") from e

    def _frames_at(self, times: np.ndarray, fps: float) -> Iterator[np.ndarray]:
        tol = 0.4 / fps
        tb = self.stream.time_base
        self.container.seek(max(0, int(math.floor((times[0] - tol) / tb))), stream=self.stream, backward=True)
        i = 0
        for frame in self.container.decode(self.stream):
            t = float(frame.pts * tb) if frame.pts is not None else float(frame.time)
            if i < len(times) and t > times[i] + tol:
                raise VideoError(f"no frame at {times[i]:.4f} s (next frame at {t:.4f} s)")
            if i < len(times) and abs(t - times[i]) <= tol:
                yield frame.to_ndarray(format="rgb24")
                i += 1
            if i == len(times):
                return
        raise VideoError(f"the video ends before {times[i]:.4f} s; {len(times) - i} of {len(times)} requested "
                         f"frames missing")

    def close(self) -> None:
        self.container.close()


def _ffmpeg_message(e: Exception) -> str:
    """FFmpeg's error text without the errno and the call it failed in ('avcodec_send_packet()')."""
    text = getattr(e, "strerror", None) or str(e)
    return f"{type(e).__name__}: {text}"
