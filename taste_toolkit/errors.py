"""Exception types raised by taste-toolkit.

Every error the toolkit raises on purpose derives from :class:`TasteError`, so
batch jobs and the CLI can catch "our" errors (bad input, bad config) apart from
programming errors. Messages say what was wrong and what to do about it.
"""


class TasteError(Exception):
    """Base class of all errors raised on purpose by taste-toolkit."""


class ConfigError(TasteError, ValueError):
    """A configuration (YAML, plugin options, dimensions) is invalid."""


class PluginNotFoundError(ConfigError, KeyError):
    """A plugin name is not registered for its kind."""

    def __str__(self):  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class InputError(TasteError, ValueError):
    """An input (audio, text, file) cannot be processed as given."""


class DataPreparationError(TasteError):
    """A data folder or manifest does not have the expected layout."""


class MissingResourceError(TasteError, FileNotFoundError):
    """A model file or package needed by a plugin is not available locally."""
