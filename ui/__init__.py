"""The studio's Gradio UI: layout (studio.py), handlers (events.py), pixels (render.py)."""
