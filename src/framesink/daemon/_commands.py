"""Control commands beside ``ping`` and the daemon's ``status``: ``stop`` and ``abort``
by id, and ``status`` of one acquisition by id (refused starts included).

An operator ends a stuck acquisition as its publisher's stop or abort message would;
with CURVE only the key that started it, or a key listed in ``curve_admins``, may.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..core import FinishReason, RefusalError
from ..transport import CommandHandler
from ._dispatch import Dispatcher
from ._security import Security

log = logging.getLogger(__name__)


def control_commands(dispatcher: Dispatcher, security: Security) -> dict[str, CommandHandler]:
    """The commands the daemon's control endpoint answers besides ping and status."""

    def end(reason: FinishReason) -> CommandHandler:
        def command(request: Mapping[str, Any], sender: str | None) -> dict[str, Any]:
            return _end(dispatcher, security, request, reason, sender)

        return command

    def status_of(request: Mapping[str, Any], sender: str | None) -> dict[str, Any]:
        name = request.get("acquisition")
        entry = dispatcher.entry_of(name) if isinstance(name, str) else None
        if entry is None:
            return {"ok": False, "error": f"no recent acquisition {name!r}"}
        return {"ok": True, "acquisition": entry.model_dump(mode="json")}

    return {
        "stop": end(FinishReason.STOP),
        "abort": end(FinishReason.ABORT),
        "status": status_of,
    }


def _end(
    dispatcher: Dispatcher,
    security: Security,
    request: Mapping[str, Any],
    reason: FinishReason,
    sender: str | None,
) -> dict[str, Any]:
    """``{"cmd": "stop" | "abort", "acquisition": ID}``."""
    name = request.get("acquisition")
    if not isinstance(name, str):
        return {"ok": False, "error": "give the acquisition id: {'acquisition': ID}"}
    admin = security.is_admin(sender)
    try:
        dispatcher.act(lambda router: router.end_on_request(name, reason, sender, admin))
    except RefusalError as exc:
        return {"ok": False, "error": exc.detail, "reason": exc.reason}
    log.warning("acquisition %s: %s from the control endpoint", name, reason.value)
    return {"ok": True, "acquisition": name, "reason": reason.value}
