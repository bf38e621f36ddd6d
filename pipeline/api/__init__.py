"""HTTP APIs on one ASGI base (Starlette + uvicorn): query, rules and captures, OTLP, support page."""
