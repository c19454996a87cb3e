"""Image checks for the builder: decode with PIL, keep JPEG/PNG bytes, re-encode other formats."""

from __future__ import annotations

import io
import re

from PIL import Image

KEPT_FORMATS = {"JPEG": "jpeg", "PNG": "png"}


class BadImageError(ValueError):
    """The bytes are not a fully decodable image."""


def prepare_image(data: bytes, *, quality: int = 95) -> tuple[bytes, str]:
    """(bytes to store, "jpeg" | "png"). Fully decodes, so truncated files are caught.

    JPEG and PNG bytes are stored unchanged; any other format is converted to RGB JPEG (or PNG
    when it has transparency) because the pipeline decodes only those two.
    """
    if not data:
        raise BadImageError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            img.load()  # decodes every pixel; raises on truncation (LOAD_TRUNCATED_IMAGES is False)
            if img.width < 1 or img.height < 1:
                raise BadImageError(f"empty image {img.size}")
            if fmt in KEPT_FORMATS:
                return data, KEPT_FORMATS[fmt]
            out = io.BytesIO()
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                img.convert("RGBA").save(out, format="PNG")
                return out.getvalue(), "png"
            img.convert("RGB").save(out, format="JPEG", quality=quality)
            return out.getvalue(), "jpeg"
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # PIL names the BytesIO object (an address); drop it so reports are reproducible.
        msg = re.sub(r"\s*<[^>]* at 0x[0-9a-fA-F]+>", "", str(e))
        raise BadImageError(f"{type(e).__name__}: {msg}") from None
