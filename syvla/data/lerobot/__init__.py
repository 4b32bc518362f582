"""LeRobotDataset v2.1 / v3.0: a writer (frames -> folder) and a reader (folder -> frames).

Written from the format's layout (../shared/notes/formats.md) with pyarrow and
PyAV only: the `lerobot` package pins an old CUDA torch. No Ray here.

  layout.py  where files and feature keys are, v2.x vs v3.0 (LeRobotLayout)
  video.py   PyAV encode / decode at timestamps
  stats.py   LeRobot's meta statistics (stats.json, per-episode stats)
  writer.py  LeRobotWriter, write_lerobot
  reader.py  LeRobotReader, read_lerobot; EpisodeError for an episode that cannot be read
"""

from syvla.data.lerobot.layout import SUPPORTED_VERSIONS, V21, V30, LeRobotLayout, view_name
from syvla.data.lerobot.reader import EpisodeError, EpisodeInfo, LeRobotReader, VideoSpan, read_lerobot
from syvla.data.lerobot.video import available_av1_encoder
from syvla.data.lerobot.writer import LeRobotWriteOptions, LeRobotWriter, split_episodes, write_lerobot

__all__ = ["LeRobotWriteOptions", "LeRobotWriter", "write_lerobot", "LeRobotReader", "read_lerobot", "EpisodeInfo",
           "EpisodeError", "VideoSpan",
           "LeRobotLayout", "available_av1_encoder", "split_episodes", "view_name", "SUPPORTED_VERSIONS", "V21", "V30"]
