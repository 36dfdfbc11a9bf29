"""Configuration errors in framesink's words: the setting, where its value came from
(flag, environment variable, or the config file and its line), and what is allowed."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource

from ..core import FramesinkError

ENV_PREFIX = "FRAMESINK_"


class ConfigError(FramesinkError, ValueError):
    """A setting is wrong; the message names it, its source and what is allowed."""


class LenientEnvSource(EnvSettingsSource):
    """``FRAMESINK_*`` variables; a list-valued one that is not JSON is one element
    (``FRAMESINK_BIND=tcp://*:5555`` means ``["tcp://*:5555"]``)."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            if isinstance(value, str) and "list" in str(field.annotation):
                return [value]
            raise


def explain(error: ValidationError, flags: Mapping[str, Any], config: Path | None) -> ConfigError:
    """One line per problem, each naming the setting, its source and what is allowed."""
    lines = []
    for problem in error.errors(include_url=False):
        where = problem["loc"][0] if problem["loc"] else None
        name = str(where) if where is not None else "the settings"
        value = problem.get("input")
        shown = (
            ""
            if where is None or isinstance(value, dict)
            else f" = {json.dumps(value, default=str)}"
        )
        lines.append(f"setting {name}{shown} ({source(name, flags, config)}): {problem['msg']}")
    return ConfigError("; ".join(lines))


def source(name: str, flags: Mapping[str, Any], config: Path | None) -> str:
    """Where the value of setting ``name`` came from."""
    if flags.get(name) is not None:
        return "flag --" + name.replace("_", "-")
    variable = ENV_PREFIX + name.upper()
    if variable in os.environ:
        return f"environment variable {variable}"
    if config is not None and config.is_file():
        pattern = re.compile(rf"^\s*{re.escape(name)}\s*=")
        for number, line in enumerate(config.read_text(errors="replace").splitlines(), 1):
            if pattern.match(line):
                return f"{config}, line {number}"
    return "default"
