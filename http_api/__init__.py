"""The Tornado HTTP API: one base handler, small handlers per route that call the pipelines."""

from http_api.app import make_app

__all__ = ["make_app"]
