"""`qwen3tts serve`: the HTTP server (OpenAI speech API, the Qwen-TTS service API, Prometheus metrics) and
the Wyoming server, thin shells over one shared `TTS` (whose scheduler batches concurrent requests).

app.py builds the Starlette app; openai_api.py and service_api.py hold the routes, synthesis.py the
streaming of one request, metrics.py the Prometheus registry, errors.py the OpenAI error shape, wyoming.py
the Home Assistant protocol. Needs the `server` extra: pip install "qwen3tts-cli[server]".
"""
