"""Small real media made on the fly for the end-to-end tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from mediamill.media.tools import ffmpeg

VIDEO_WORKFLOW = {
    "code": "WF-TEST-VIDEO", "name": "small video", "type": "video", "queue": "test",
    "input_types": ["video/*"],
    "steps": [
        {"name": "Validate", "action": "validate_video"},
        {"name": "Transcode 120p", "action": "transcode_video",
         "params": {"height": 120, "preset": "ultrafast", "codec": "h264"}},
        {"name": "Nap", "action": "sleep", "params": {"seconds": 0.5}},
    ],
}


def make_video(path: Path, seconds: float = 2.0, size: str = "320x240") -> Path:
    """An H.264 + AAC MP4 from ffmpeg's test sources (25 fps)."""
    cmd = [ffmpeg().path, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration={seconds}",
           "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
           str(path)]
    subprocess.run(cmd, check=True, timeout=60)
    return path


def probe(path: Path) -> dict[str, Any]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {"codec": stream.codec_context.name, "width": stream.codec_context.width,
                "height": stream.codec_context.height}
