"""Regressions in the media layer found while running the workflows end to end and benchmarking them."""

from __future__ import annotations

import pytest
from PIL import Image

from mediamill.config import MediaLimits
from mediamill.media.image import decode


@pytest.mark.parametrize("scale, size", [(0.5, (800, 600)), (0.25, (400, 300)), (0.125, (200, 150)),
                                         (0.49, (800, 600)), (0.51, (1600, 1200))])
def test_jpeg_decode_shrinks_in_the_decoder_when_the_need_fits_exactly(tmp_path, scale, size):
    """A 2000 px need from a 4000 px JPEG (a 12 MP photo) must use the decoder's 1/2 scale: asking
    draft() for one pixel more made it decode the full image and resize it (+150 ms per image)."""
    path = tmp_path / "photo.jpg"
    Image.linear_gradient("L").resize((1600, 1200)).convert("RGB").save(path, "JPEG", quality=80)
    assert decode(path, MediaLimits(), scale=scale).image.size == size
