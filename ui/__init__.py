"""The Gradio chat: `build_app(assistant)` builds the page, `launch` runs it."""
