"""The errors xsmom raises, in one hierarchy, so that callers catch a type instead of parsing a
message. Every class is also the builtin it replaced (``ValueError`` for bad input, ``OSError`` for
files and the network), so existing ``except ValueError`` code keeps working.

The core's error kinds map to these classes in one place (``to_py`` in ``src/python/mod.rs``):

=================  ==========================  ===========================================
core kind          class                       what is wrong
=================  ==========================  ===========================================
``Io``             :class:`FileAccessError`    a file or directory cannot be read/written
``Format``         :class:`DataFormatError`    a file is not valid Parquet/CSV, a column lacks
``Data``           :class:`DataError`          data violates the model (duplicates, gaps, …)
``Config``         :class:`ConfigError`        a config value has the wrong type or range
``UnknownKey``     :class:`UnknownKeyError`    a config key does not exist
``Invalid``        :class:`InvalidArgumentError`  arguments of a call are inconsistent
(exchange)         :class:`ExchangeError`      the exchange failed or refused (fetch, live)
=================  ==========================  ===========================================

An exchange that does not answer at all (a timeout, DNS, a refused connection) raises
:class:`ExchangeUnreachableError`, a subclass of :class:`ExchangeError`.
"""

from __future__ import annotations


class XsmomError(Exception):
    """Base of every error xsmom raises on purpose."""


class ConfigError(XsmomError, ValueError):
    """A configuration value is invalid (type, range, combination)."""


class UnknownKeyError(ConfigError):
    """A configuration key that does not exist (a typo, or a key of another version).

    ``key`` is its dotted path (``strategy.kmax``) when the core raised it.
    """

    key: str = ""


class DataError(XsmomError, ValueError):
    """Bars or funding violate the data model."""


class DataFormatError(DataError):
    """A data file is readable but not valid Parquet/CSV, or lacks a required column."""


class InvalidArgumentError(XsmomError, ValueError):
    """Arguments of an API call are inconsistent (an empty universe, a window outside the data, …)."""


class FileAccessError(XsmomError, OSError):
    """A file or directory cannot be opened, read or written."""


class ExchangeError(XsmomError, ConnectionError):
    """The exchange could not be reached or refused a request (a ConnectionError, so an OSError)."""


class ExchangeUnreachableError(ExchangeError):
    """The exchange could not be reached at all: a timeout, DNS, a refused connection, TLS."""


class ResearchError(XsmomError, ValueError):
    """A research run cannot proceed as asked (search space, walk-forward layout, storage, …)."""


class DeployError(XsmomError):
    """A config deployment was refused or failed; the live file is as it was."""


class StateError(XsmomError, ValueError):
    """The live runner's state file cannot be used (missing, corrupt, another schema)."""


__all__ = [
    "ConfigError",
    "DataError",
    "DataFormatError",
    "DeployError",
    "ExchangeError",
    "ExchangeUnreachableError",
    "FileAccessError",
    "InvalidArgumentError",
    "ResearchError",
    "StateError",
    "UnknownKeyError",
    "XsmomError",
]
