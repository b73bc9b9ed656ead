"""Damaged inputs, family by family, through every action that reads them: each either succeeds
(decoders conceal some damage) or fails ``invalid_input`` with a plain message — never a raw
library exception, which the engine would class ``internal`` (retried, counted by breakers).

Our own bugs stay ``internal``: the wrapping covers reading the input, not writing outputs or
wrong calls of ours.
"""

from __future__ import annotations

import errno
import re

import pypdfium2 as pdfium
import pytest

from mediamill.errors import CorruptMedia, InvalidInput, classify_exception
from mediamill.media import document as doc
from mediamill.media.decoders import plain_reason, reading_input
from mediamill.media.tools import tool_failure
from tests.media import damage as D
from tests.media.conftest import run_action

PDF_ACTIONS = [("validate_document", {}), ("extract_text", {}), ("render_thumbnail", {}),
               ("convert_document", {"format": "pdf"}), ("convert_document", {"format": "text"})]
DOCX_ACTIONS = [("validate_document", {}), ("extract_text", {}), ("render_thumbnail", {}),
                ("convert_document", {"format": "text"})]
IMAGE_ACTIONS = [("validate_image", {}), ("resize_image", {"max_dimension": 200}), ("create_thumbnail", {"size": 96}),
                 ("optimize_image", {"quality": 85}), ("convert_format", {"format": "webp"})]
VIDEO_ACTIONS = [("validate_video", {"check_codec": True, "check_duration": True}), ("extract_video_metadata", {}),
                 ("transcode_video", {"resolution": "240p"}), ("generate_thumbnails", {"count": 3}),
                 ("contact_sheet", {"count": 4}), ("detect_scenes", {}), ("package_hls", {"ladder": ["240p"]}),
                 ("transcribe_audio", {})]
AUDIO_ACTIONS = [("validate_audio", {}), ("extract_audio_metadata", {}), ("transcode_audio", {"format": "mp3"}),
                 ("generate_waveform", {}), ("transcribe_audio", {})]

FAMILIES = {
    "pdf": ("pdf", D.PDF, PDF_ACTIONS),
    "docx": ("docx", D.DOCX, DOCX_ACTIONS),
    "jpeg": ("jpeg", D.IMAGE, IMAGE_ACTIONS),
    "png": ("png_alpha", D.IMAGE, IMAGE_ACTIONS),
    "video": ("video", D.VIDEO, VIDEO_ACTIONS),
    "m4a": ("m4a_plain", D.AUDIO, AUDIO_ACTIONS),
    "wav": ("wav", D.AUDIO, AUDIO_ACTIONS),
}
#: what a plain public message never contains: paths, addresses, errno, library exception names
NOT_PLAIN = re.compile(r"/tmp|/var|/work|0x[0-9a-f]{4,}|Errno|Traceback|Error:|\w+Error\b|@ |\[\w+#", re.I)


def assert_plain(message: str) -> None:
    assert message and len(message) < 300, message
    assert not NOT_PLAIN.search(message), message


def _cases():
    for family, (sample, damages, actions) in FAMILIES.items():
        for damage in damages:
            yield pytest.param(family, sample, damage, actions, id=f"{family}-{damage.name}")


@pytest.mark.parametrize("family, sample, damage, actions", list(_cases()))
def test_damaged_input_is_invalid_input_in_every_action(media, tmp_path, family, sample, damage, actions):
    bad = D.damaged_copy(getattr(media, sample), damage, tmp_path / "in")
    outcomes = {}
    for n, (action, params) in enumerate(actions):
        try:
            run_action(action, bad, tmp_path / f"work-{n}", params)
            outcomes[action] = "ok"
        except InvalidInput as exc:  # the only acceptable failure
            assert_plain(exc.message)
            outcomes[action] = "invalid_input"
    assert outcomes  # every action ran to a classified end (anything else raised above)


@pytest.mark.parametrize("family, damage, action", [
    ("pdf", "pdf-page-objects", "validate_document"),  # pdfium: "Failed to get page size by index"
    ("pdf", "pdf-page-objects", "extract_text"),       # pdfium: "Failed to load page"
    ("pdf", "pdf-page-objects", "render_thumbnail"),
    ("pdf", "zeroed-40-20", "validate_document"),
])
def test_pdfium_page_errors_are_invalid_input(media, tmp_path, family, damage, action):
    """The damage that used to fail as ``internal`` (and open the validate_document breaker)."""
    dmg = next(d for d in D.PDF if d.name == damage)
    bad = D.damaged_copy(media.pdf, dmg, tmp_path)
    with pytest.raises(CorruptMedia, match=r"page \d of the PDF is damaged") as info:
        run_action(action, bad, tmp_path / "work")
    assert info.value.error_class == "invalid_input" and not info.value.retryable


# -- our own bugs stay internal ------------------------------------------------------------------------
def test_a_page_index_bug_of_ours_is_not_blamed_on_the_pdf(media):
    with doc.open_pdf(media.pdf) as pdf, pytest.raises(IndexError):
        doc.load_page(pdf, 7)
    assert classify_exception(IndexError("page index 7 out of range")).error_class == "internal"


def test_decoder_errors_outside_input_reading_stay_internal(tmp_path):
    import pyvips

    # writing an output with a bad call is our bug: nothing wraps it
    with pytest.raises(pyvips.Error) as info:
        pyvips.Image.black(4, 4).write_to_file(str(tmp_path / "out.not-a-format"))
    assert classify_exception(info.value).error_class == "internal"
    # a programming error inside reading_input is not a decoder complaint: it passes through
    with pytest.raises(TypeError), reading_input("the PDF"):
        raise TypeError("wrong argument")


def test_reading_input_turns_decoder_errors_into_plain_corrupt_media():
    with pytest.raises(CorruptMedia) as info, reading_input("the PDF"):
        raise pdfium.PdfiumError("Failed to load page.")
    assert info.value.message == "the PDF is damaged and cannot be read (failed to load page)"


@pytest.mark.parametrize("raw, plain", [
    ("[Errno 1094995529] Invalid data found when processing input: '/srv/mm/scratch/job-1/input'",
     "invalid data found when processing input"),
    ("[out#2/image2 @ 0x555eb1c1d000] Nothing was written into output file",
     "nothing was written into output file"),
    ('VipsForeignLoad: "/var/lib/mediamill/in.jpg" is not a known file format\nsecond line',
     "VipsForeignLoad: the file is not a known file format"),
    ("", "unreadable data"),
])
def test_plain_reason(raw, plain):
    assert plain_reason(raw) == plain


# -- out of space is a resource failure, and paths stay private ------------------------------------------
def test_out_of_space_is_resource_and_retried():
    err = classify_exception(OSError(errno.ENOSPC, "No space left on device", "/var/lib/mediamill/scratch/x.mp4"))
    assert err.error_class == "resource" and err.retryable
    assert "/var" not in err.message and "scratch" not in err.message
    assert classify_exception(RuntimeError("VipsImage: No space left on device")).error_class == "resource"
    tool = tool_failure("ffmpeg transcode", 1,
                        "[mp4 @ 0x1] Error writing trailer of /srv/out.mp4: No space left on device")
    assert tool.error_class == "resource" and "/srv" not in str(tool)  # type: ignore[attr-defined]


def test_internal_messages_carry_no_server_paths():
    err = classify_exception(FileNotFoundError(errno.ENOENT, "No such file or directory",
                                               "/var/lib/mediamill/scratch/job-9/step-2/out.png"))
    assert err.error_class == "internal" and "/var" not in err.message and "<path>" in err.message
    assert "/var/lib/mediamill/scratch" in err.stderr_tail  # the operator still sees where
