"""``tollgate eval swap --apply``: put the candidate first in a route, editing the config file.

The file is edited as text, in place, so that its comments and layout survive: the route's
class gets ``members = [candidate, ...the others]``. When other routes share that class, they
must not change unseen, so a new class ``<class>-<route>`` (the same members, degraded path and
tier, the candidate first) is appended and the route pointed at it. The edited text is parsed
back and compared with the intended change before anything is written, and the file is
replaced atomically: a layout the editor does not understand (inline tables, say) is refused
with a message, never half-written.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import msgspec

from sidecar._config import ClassConfig, Config, parse_config

__all__ = ["ApplyError", "apply_swap"]


class ApplyError(Exception):
    """The config file could not be edited safely; nothing was written."""


def _key(name: str) -> str:
    """``name`` as a TOML key (bare when it can be)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _header(section: str, name: str) -> re.Pattern[str]:
    quoted = "|".join(re.escape(q) for q in (json.dumps(name), f"'{name}'", name))
    return re.compile(
        rf"^[ \t]*\[[ \t]*{section}[ \t]*\.[ \t]*(?:{quoted})[ \t]*\][ \t]*(?:#.*)?$", re.M
    )


def _table_span(text: str, section: str, name: str) -> tuple[int, int]:
    """Where the body of ``[section.name]`` is: from after its header to the next header."""
    found = list(_header(section, name).finditer(text))
    if len(found) != 1:
        raise ApplyError(
            f"cannot find a single [{section}.{name}] table in the file; edit it by hand"
        )
    start = found[0].end()
    following = re.compile(r"^[ \t]*\[", re.M).search(text, start)
    return start, following.start() if following else len(text)


def _replace_in_table(
    text: str, section: str, name: str, pattern: str, replacement: str, what: str
) -> str:
    start, end = _table_span(text, section, name)
    body = text[start:end]
    new_body, count = re.subn(pattern, lambda m: m.group(1) + replacement, body, count=1,
                              flags=re.M | re.S)  # fmt: skip
    if count != 1:
        raise ApplyError(f"cannot find {what} in [{section}.{name}]; edit it by hand")
    return text[:start] + new_body + text[end:]


def _members_value(members: list[str]) -> str:
    return "[" + ", ".join(json.dumps(m) for m in members) + "]"


def _shared(config: Config, class_name: str, route: str) -> bool:
    """Whether anything but ``route`` uses the class (another route, a cascade, a degraded
    path)."""
    return (
        any(
            name != route and (r.model_class == class_name or r.cascade_from == class_name)
            for name, r in config.routes.items()
        )
        or config.routes[route].cascade_from == class_name
        or any(c.degrade_to == class_name for c in config.classes.values())
    )


def plan_swap(config: Config, route: str, candidate: str) -> tuple[Config, str]:
    """The config after the swap, and a sentence saying what changes."""
    class_name = config.routes[route].model_class
    cls = config.classes[class_name]
    members = [candidate, *(m for m in cls.members if m != candidate)]
    classes = dict(config.classes)
    routes = dict(config.routes)
    if _shared(config, class_name, route):
        new_name = f"{class_name}-{route}"
        suffix = 2
        while new_name in classes:
            new_name = f"{class_name}-{route}-{suffix}"
            suffix += 1
        classes[new_name] = ClassConfig(members=members, degrade_to=cls.degrade_to, tier=cls.tier)
        routes[route] = msgspec.structs.replace(routes[route], model_class=new_name)
        change = (
            f"class {class_name!r} is shared, so route {route!r} now uses a new class "
            f"{new_name!r}: {', '.join(members)}"
        )
    else:
        classes[class_name] = msgspec.structs.replace(cls, members=members)
        change = f"class {class_name!r} (route {route!r}) is now: {', '.join(members)}"
    return msgspec.structs.replace(config, classes=classes, routes=routes), change


def apply_swap(path: str | Path, config: Config, route: str, candidate: str) -> str:
    """Edit the file at ``path`` (which ``config`` was loaded from) so that ``route`` tries
    ``candidate`` first. Returns what changed; raises :class:`ApplyError` and writes nothing
    when the edit cannot be made and verified."""
    path = Path(path)
    intended, change = plan_swap(config, route, candidate)
    text = path.read_text()
    old_class = config.routes[route].model_class
    new_class = intended.routes[route].model_class
    members = _members_value(intended.classes[new_class].members)
    if new_class == old_class:
        text = _replace_in_table(
            text, "classes", old_class, r"^([ \t]*members[ \t]*=[ \t]*)\[.*?\]", members,
            "members = [...]",
        )  # fmt: skip
    else:
        text = _replace_in_table(
            text, "routes", route, r"^([ \t]*class[ \t]*=[ \t]*)(?:\"[^\"\n]*\"|'[^'\n]*')",
            json.dumps(new_class), "class = ...",
        )  # fmt: skip
        cls = intended.classes[new_class]
        lines = [f"\n[classes.{_key(new_class)}]", f"members = {members}"]
        if cls.degrade_to is not None:
            lines.append(f"degrade_to = {json.dumps(cls.degrade_to)}")
        if cls.tier is not None:
            lines.append(f"tier = {cls.tier}")
        text = text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    try:
        edited = parse_config(text, base_dir=path.parent, source=str(path))
    except Exception as exc:
        raise ApplyError(f"the edited config would not load ({exc}); nothing was written") from exc
    if edited != intended:
        raise ApplyError(
            "the edited file does not say what was intended (an unusual layout?); nothing was "
            "written; edit it by hand: " + change
        )
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return change
