"""pytest fixtures for the nginx edge tests (implementation in nginx_harness.py,
a uniquely named module so it can't clash with other test directories' conftest)."""

from nginx_harness import echo_upstream, nginx_echo, nginx_echo_truncated, wharf_stack  # noqa: F401
