"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class MoshiError(Exception):
    """Base class: the message says what went wrong and what to do."""


class WeightsError(MoshiError):
    """A weight file is missing, unreadable, or does not fit the model."""


class ConfigError(MoshiError):
    """A config file is missing, malformed, or describes an unsupported model."""


class AudioError(MoshiError):
    """An audio file or audio device cannot be used."""
