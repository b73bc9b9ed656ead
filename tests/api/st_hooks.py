"""schemathesis hooks (loaded through SCHEMATHESIS_HOOKS): raw bodies for the tus PATCH."""

import schemathesis
from hypothesis import strategies as st

schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=64))
