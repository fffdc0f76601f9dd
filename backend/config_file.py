"""`cirrus serve --config FILE`: a TOML file that sets ServerConfig fields by their names.

    db_url = "postgresql+psycopg://cirrus@db.example/cirrus"
    blocks_url = ["file:///srv/cirrus/a", "file:///srv/cirrus/b"]   # several: replicated
    key_file = "/etc/cirrus/master.key"
    host = "0.0.0.0"

Every key is the name of a ServerConfig field (backend/config.py), so a field added there is
settable here with no other change; an unknown key or a value of the wrong type is refused
with one line. N servers share one file and differ only by the flags that override it
(`--port`); relative paths are relative to the file, so the file may travel with its key.
"""

import dataclasses
import tomllib
import types
import typing
from pathlib import Path

from backend.blockstore.registry import REPLICA_SEPARATOR, REPLICATED_PREFIX
from backend.config import ServerConfig


class ConfigFileError(ValueError):
    """The file is unreadable, is not TOML, or holds a setting ServerConfig does not take."""


def setting_names() -> list[str]:
    return [field.name for field in dataclasses.fields(ServerConfig)]


def read_config_file(path: Path) -> dict[str, object]:
    """The file's settings as ServerConfig keyword arguments, each checked against its field."""
    try:
        with open(path, "rb") as file:
            table = tomllib.load(file)
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"config file {path} is not valid TOML: {exc}") from None
    hints = typing.get_type_hints(ServerConfig)
    settings: dict[str, object] = {}
    for name, value in table.items():
        if name not in hints:
            known = ", ".join(setting_names())
            raise ConfigFileError(f"config file {path}: unknown setting {name!r} (known: {known})")
        try:
            settings[name] = _coerce(name, value, hints[name], Path(path).parent)
        except TypeError as exc:
            raise ConfigFileError(f"config file {path}: {name} {exc}") from None
    return settings


def _coerce(name: str, value: object, hint: object, base: Path) -> object:
    """value as the field's type: TOML strings become paths, integers floats, lists tuples
    (of their items' type)."""
    if name == "blocks_url" and isinstance(value, list) and value:
        value = value[0] if len(value) == 1 else REPLICATED_PREFIX + REPLICA_SEPARATOR.join(value)
    kinds = [hint]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
    for kind in kinds:
        plain = typing.get_origin(kind) or kind
        if plain is Path and isinstance(value, str):
            return base / Path(value).expanduser()  # an absolute path stays as it is
        if plain is float and type(value) is int:
            return float(value)
        if plain is tuple and isinstance(value, list):
            item = (typing.get_args(kind) or (object,))[0]
            return tuple(_coerce(name, element, item, base) for element in value)
        if isinstance(plain, type) and isinstance(value, plain) and type(value) is not bool:
            return value
        if plain is bool and type(value) is bool:
            return value
    expected = " or ".join(getattr(kind, "__name__", str(kind)) for kind in kinds)
    raise TypeError(f"must be {expected}, not {type(value).__name__} ({value!r:.60})")
