"""The one base class of errors a user can fix.

A bad flag, config file, input, concept file, spaCy pipeline, checkpoint or output raises a
subclass of :class:`UserError` with a message that says what is wrong and how to fix it. The CLI
prints that message as one line and exits with code 2; job entry points report it as
``refused``. Defined apart from the modules that raise them so that the CLI catches them all
without importing those modules (and their heavy dependencies) at start-up.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; its message is shown as one line, exit code 2."""
