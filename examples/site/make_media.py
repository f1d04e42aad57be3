"""Write the demo site's media files: media/tone.wav and media/clip.webm.

The WAV (4 s, 8 kHz, 8-bit mono, a 440 Hz tone with a fade in and out) needs only the standard
library. The WebM (4 s, 160x120, VP8, no audio track) needs ffmpeg on PATH; without it the
script keeps the committed clip. Both files are committed, so the site works without running
this script.

    python examples/site/make_media.py
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import wave
from pathlib import Path

MEDIA_DIR = Path(__file__).resolve().parent / "media"
SAMPLE_RATE_HZ = 8000
DURATION_SECONDS = 4
TONE_HZ = 440
FADE_SECONDS = 0.2


def write_tone(path: Path) -> None:
    """Write an unsigned 8-bit PCM sine tone, faded at both ends to avoid clicks."""
    frames = bytearray()
    total = SAMPLE_RATE_HZ * DURATION_SECONDS
    fade = int(SAMPLE_RATE_HZ * FADE_SECONDS)
    for index in range(total):
        envelope = min(1.0, index / fade, (total - index) / fade)
        sample = math.sin(2 * math.pi * TONE_HZ * index / SAMPLE_RATE_HZ) * envelope
        frames.append(128 + round(sample * 60))
    with wave.open(str(path), "wb") as output:
        output.setnchannels(1)
        output.setsampwidth(1)
        output.setframerate(SAMPLE_RATE_HZ)
        output.writeframes(bytes(frames))


def write_clip(path: Path) -> bool:
    """Encode a test pattern with ffmpeg; return False when ffmpeg is not installed."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return False
    command = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size=160x120:rate=15:duration={DURATION_SECONDS}",
        "-c:v",
        "libvpx",
        "-b:v",
        "60k",
        "-an",
        "-y",
        str(path),
    ]
    subprocess.run(command, check=True)
    return True


def main() -> int:
    MEDIA_DIR.mkdir(exist_ok=True)
    tone = MEDIA_DIR / "tone.wav"
    write_tone(tone)
    print(f"wrote {tone} ({tone.stat().st_size} bytes)")
    clip = MEDIA_DIR / "clip.webm"
    if write_clip(clip):
        print(f"wrote {clip} ({clip.stat().st_size} bytes)")
    else:
        print(f"ffmpeg not found; kept {clip}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
