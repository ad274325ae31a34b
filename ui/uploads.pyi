"""Image uploads that reach our own checks unopened (`UploadedImage`).

gr.Image's preprocessing opens every upload with Pillow (and, with the default image_mode, decodes
and converts all of it) before a handler runs: a 169 MP pixel bomb is decompressed into memory
and a corrupt file fails with the framework's message. `UploadedImage` is a gr.Image (the same
frontend: `get_block_name()` is "image", so element ids, sources and display are unchanged) whose
input value is the uploaded file's path, never opened here; the handlers read it with
`fsad_core.images`, which checks the size from the header first (pixel bombs are refused before
decoding) and words a corrupt or unsupported file readably.

Gradio writes a typing stub for every component class (`uploads.pyi`, committed beside this
module, so nothing is written at import); this module is kept small for that reason.
"""
from __future__ import annotations

import base64
import tempfile

import gradio as gr

from gradio.events import Dependency

class UploadedImage(gr.Image):
    """A gr.Image whose preprocess returns the uploaded path unopened. Create it with
    type="filepath", image_mode=None (no __init__ of its own: Gradio reads the constructor's
    signature to send the component's properties to the browser)."""

    def get_block_name(self) -> str:
        return "image"

    @classmethod
    def get_component_class_id(cls) -> str:
        # Gradio rebuilds a session's component from its class id on a property update (a subclass
        # with an id of its own lost its value that way): keep gr.Image's
        return gr.Image.get_component_class_id()

    def preprocess(self, payload):
        if payload is None:
            return None
        url = getattr(payload, "url", None)
        if url and url.startswith("data:"):  # a pasted image sent inline: keep its bytes, undecoded
            data = base64.b64decode(url.split(",", 1)[1] if "," in url else "", validate=False)
            fd, path = tempfile.mkstemp(prefix="paste-", suffix=".img", dir=self.GRADIO_CACHE)
            with open(fd, "wb") as fh:
                fh.write(data)
            return path
        return None if payload.path is None else str(payload.path)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component