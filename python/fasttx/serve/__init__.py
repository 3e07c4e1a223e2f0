"""``fasttx serve``: an OpenAI-compatible server over a continuous-batching engine (engine.py)."""
