"""The studio's Gradio UI: the shell (studio.py), the project bar (project_bar.py), one module per tab
(*_tab.py) with its layout and handlers, shared helpers (common.py, weights.py, result_view.py),
pixels (render.py)."""
