"""Pydantic request/response schemas, one module per protocol family."""
