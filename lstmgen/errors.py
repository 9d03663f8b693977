"""Errors a user can cause: the message says what is wrong and how to fix it."""


class UserError(Exception):
  """Something the user can fix (a path, a flag, a config field)."""
