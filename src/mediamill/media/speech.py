"""Offline speech-to-text with pocketsphinx and the US-English model its wheel ships.

Audio is decoded by ffmpeg to 16 kHz mono 16-bit PCM (what the acoustic model expects),
cut into speech segments by pocketsphinx's voice-activity detector, and each segment is
decoded on its own: silence costs nothing and word times stay exact. The decoder (≈0.3 s to
load the model) is kept per process, so a warm worker pays for it once.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from mediamill.errors import StepTimeout
from mediamill.media.tools import run_ffmpeg

RATE = 16_000
_FRAMES_PER_SECOND = 100  # pocketsphinx's default frame rate (frate)
_FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[BREATH]", "[COUGH]", "[LAUGH]", "[UM]", "[UH]"}


@dataclass
class Word:
    word: str
    start: float
    end: float
    confidence: float


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    language: str
    engine: str
    duration: float
    segments: list[Segment]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    def as_json(self) -> dict[str, Any]:
        return {"language": self.language, "engine": self.engine, "duration": self.duration,
                "text": self.text, "segments": [asdict(s) for s in self.segments]}


@cache
def _decoder() -> Any:
    from pocketsphinx import Decoder

    return Decoder(loglevel="FATAL")


def decode_pcm(source: Path, out: Path, *, timeout: float | None) -> float:
    """ffmpeg → 16 kHz mono s16le raw PCM in ``out``; returns its duration in seconds."""
    run_ffmpeg(["-i", str(source), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(RATE),
                "-f", "s16le", str(out)], timeout=timeout, what="ffmpeg audio decode")
    return out.stat().st_size / 2 / RATE


def _segment_words(decoder: Any, offset: float) -> list[Word]:
    words = []
    for item in decoder.seg():
        if item.word in _FILLERS:
            continue
        word = item.word.split("(")[0]  # "read(2)" is the dictionary's 2nd pronunciation
        words.append(Word(word=word, start=round(offset + item.start_frame / _FRAMES_PER_SECOND, 2),
                          end=round(offset + (item.end_frame + 1) / _FRAMES_PER_SECOND, 2),
                          confidence=round(min(1.0, max(0.0, item.prob)), 3)))
    return words


def transcribe(source: Path, *, timeout: float | None,
               on_progress: Callable[[float], None] | None = None) -> Transcript:
    """Transcribe the first audio stream of ``source``."""
    from pocketsphinx import Segmenter

    deadline = None if timeout is None else time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="speech-") as tmp:
        pcm = Path(tmp) / "audio.raw"
        duration = decode_pcm(source, pcm, timeout=timeout)
        decoder = _decoder()
        segments: list[Segment] = []
        with pcm.open("rb") as stream:
            for speech in Segmenter(sample_rate=RATE).segment(stream):
                if deadline is not None and time.monotonic() > deadline:
                    raise StepTimeout(f"transcription did not finish within {timeout:.0f} s")
                decoder.start_utt()
                decoder.process_raw(speech.pcm, full_utt=True)
                decoder.end_utt()
                words = _segment_words(decoder, speech.start_time)
                text = " ".join(w.word for w in words)
                segments.append(Segment(start=round(speech.start_time, 2), end=round(speech.end_time, 2),
                                        text=text, words=words))
                if on_progress and duration:
                    on_progress(min(99.0, 100.0 * speech.end_time / duration))
    return Transcript(language="en-us", engine="pocketsphinx", duration=round(duration, 3),
                      segments=[s for s in segments if s.words])


def webvtt(transcript: Transcript) -> str:
    """Captions for the transcript's segments."""
    def stamp(seconds: float) -> str:
        ms = round(seconds * 1000)
        hours, ms = divmod(ms, 3_600_000)
        minutes, ms = divmod(ms, 60_000)
        secs, ms = divmod(ms, 1000)
        return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"

    cues = [f"{stamp(s.start)} --> {stamp(max(s.end, s.start + 0.001))}\n{s.text}"
            for s in transcript.segments if s.text]
    return "WEBVTT\n\n" + "\n\n".join(cues) + ("\n" if cues else "")


def words_per_minute(transcript: Transcript) -> float:
    words = sum(len(s.words) for s in transcript.segments)
    return 0.0 if transcript.duration <= 0 else round(words / max(transcript.duration / 60, math.ulp(1)), 1)
