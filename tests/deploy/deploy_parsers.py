"""Small readers for the deploy/ file formats that have no parser among the test dependencies.

Each reads the subset of its format that deploy/ uses and raises ``ValueError`` on anything
else, so a construct it does not understand fails the tests instead of being skipped over. The
real tools check the full syntax where the tests can count on them: ``nats-server -t`` runs in
the tests (the Kubernetes manifests go through kubernetes-validate); ``systemd-analyze verify``
and ``docker build`` are not on every machine that runs the tests.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ContainerStage",
    "Var",
    "env_pairs",
    "exec_form",
    "ignored_by",
    "parse_containerfile",
    "parse_env_file",
    "parse_nats_conf",
    "parse_unit",
    "render_nats_conf",
]


# --- nats-server configuration --------------------------------------------------------------


class Var(str):
    """A ``$NAME`` reference to an environment variable, resolved by nats-server at start."""


# nats-server's size suffixes (conf/parse.go): k/m/g are powers of 1000, kb/mb/gb of 1024.
_SIZE_SUFFIXES = {
    "": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
    "t": 1000**4,
    "tb": 1024**4,
}
_SIZED_INT = re.compile(r"^(-?\d+)([A-Za-z]*)$")


def parse_nats_conf(text: str) -> dict[str, Any]:
    """``key: value`` pairs, ``key { ... }`` blocks, ``[ ... ]`` lists, comments, ``$VAR``."""
    parser = _NatsConfParser(text)
    result = parser.block()
    if parser.pos != len(text):
        raise ValueError(f"unexpected {text[parser.pos]!r} at offset {parser.pos}")
    return result


def render_nats_conf(conf: dict[str, Any], env: dict[str, str]) -> str:
    """The configuration as JSON (which nats-server also reads), variables resolved from env."""

    def resolve(value: Any) -> Any:
        if isinstance(value, Var):
            return env[str(value)]
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    return json.dumps(resolve(conf), indent=2)


class _NatsConfParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _skip(self) -> None:
        # Whitespace, commas (separators in lists and blocks alike) and comments.
        text = self.text
        while self.pos < len(text):
            if text[self.pos] in " \t\r\n,":
                self.pos += 1
            elif text[self.pos] == "#" or text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def block(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while True:
            self._skip()
            if self.pos >= len(self.text) or self.text[self.pos] == "}":
                return result
            match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(self.text, self.pos)
            if match is None:
                raise ValueError(f"expected a key at offset {self.pos}")
            key = match.group()
            if key in result:
                raise ValueError(f"duplicate key {key!r}")
            self.pos = match.end()
            while self.text[self.pos] in " \t":
                self.pos += 1
            if self.text[self.pos] in ":=":
                self.pos += 1
                while self.text[self.pos] in " \t":
                    self.pos += 1
            result[key] = self._value()

    def _value(self) -> Any:
        char = self.text[self.pos]
        if char == "{":
            self.pos += 1
            value = self.block()
            self._expect("}")
            return value
        if char == "[":
            self.pos += 1
            items = []
            while True:
                self._skip()
                if self.text[self.pos] == "]":
                    self.pos += 1
                    return items
                items.append(self._value())
        if char == '"':
            end = self.text.index('"', self.pos + 1)
            quoted = self.text[self.pos + 1 : end]
            if "\\" in quoted:
                raise ValueError("escapes in quoted strings are not supported")
            self.pos = end + 1
            return _no_embedded_variable(quoted)
        match = re.compile(r"[^\n,}\]#]+").match(self.text, self.pos)
        if match is None:
            raise ValueError(f"expected a value at offset {self.pos}")
        self.pos = match.end()
        return _bare(match.group().strip())

    def _expect(self, char: str) -> None:
        self._skip()
        if self.pos >= len(self.text) or self.text[self.pos] != char:
            raise ValueError(f"expected {char!r} at offset {self.pos}")
        self.pos += 1


def _no_embedded_variable(value: str) -> str:
    # nats-server resolves a variable only as a whole value: "nats-route://u:$P@host" would
    # reach the server with the five characters "$P" in it (checked with nats-server 2.15).
    if "$" in value:
        raise ValueError(f"nats-server does not substitute variables inside {value!r}")
    return value


def _bare(token: str) -> Any:
    if token.startswith("$"):
        if not re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", token):
            raise ValueError(f"not a variable reference: {token!r}")
        return Var(token[1:])
    if token.lower() in ("true", "yes", "on"):
        return True
    if token.lower() in ("false", "no", "off"):
        return False
    if match := _SIZED_INT.match(token):
        suffix = match.group(2).lower()
        if suffix not in _SIZE_SUFFIXES:
            raise ValueError(f"unknown size suffix in {token!r}")
        return int(match.group(1)) * _SIZE_SUFFIXES[suffix]
    return _no_embedded_variable(token)


# --- environment files ------------------------------------------------------------------------


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines, as systemd's EnvironmentFile= and ``set -a; . FILE`` both read them.

    Comments and blank lines are skipped. Quotes, spaces, ``$`` and backslashes are refused:
    the two readers treat them differently.
    """
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"not a KEY=value line: {line!r}")
        if re.search(r"[\s'\"$\\`]", value):
            raise ValueError(f"{key}: quotes, spaces, $ and backslashes are not supported")
        if key in env:
            raise ValueError(f"{key} is set twice")
        env[key] = value
    return env


# --- systemd unit files ---------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of ``Key=value`` lines; a key may repeat (each value is kept, in order).

    configparser would do with ``strict=False``, but it merges repeated keys and treats
    ``;``/``#`` mid-line differently from systemd; this follows systemd.syntax(7) for the
    subset used: comments are whole lines, a trailing backslash continues a line.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if pending:
            if raw.lstrip().startswith(("#", ";")):
                continue
            pending += " " + raw.strip()
        else:
            pending = raw.strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        logical.append(pending)
        pending = ""
    if pending:
        raise ValueError("the file ends in a line continuation")
    for line in logical:
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
            if name in sections:
                raise ValueError(f"section [{name}] appears twice")
            current = sections[name] = {}
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ValueError(f"not a Key=value line inside a section: {line!r}")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


# --- Containerfile / Dockerfile ---------------------------------------------------------------


@dataclass
class ContainerStage:
    base: str
    name: str | None
    # (instruction in upper case, its arguments as written), in order.
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


_INSTRUCTION = re.compile(r"^([A-Za-z]+)\s+(.*)$", re.DOTALL)
_ARG_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def parse_containerfile(text: str) -> tuple[dict[str, str], list[ContainerStage]]:
    """The global ARG defaults (those before the first FROM) and the build stages.

    Comment lines and backslash continuations are handled; a parser directive (``# syntax=``)
    is a comment here. Heredocs are not supported.
    """
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue
        if "<<" in stripped and re.search(r"<<-?\s*[\"']?[A-Za-z]", stripped):
            raise ValueError("heredocs are not supported")
        pending = f"{pending} {stripped}" if pending else stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        if pending:
            lines.append(pending)
        pending = ""
    if pending:
        raise ValueError("the file ends in a line continuation")

    global_args: dict[str, str] = {}
    stages: list[ContainerStage] = []
    for line in lines:
        match = _INSTRUCTION.match(line)
        if match is None:
            raise ValueError(f"not an instruction: {line!r}")
        instruction, args = match.group(1).upper(), match.group(2).strip()
        if instruction == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform=")]
            if len(words) == 3 and words[1].upper() == "AS":
                base, name = words[0], words[2]
            elif len(words) == 1:
                base, name = words[0], None
            else:
                raise ValueError(f"cannot read FROM {args!r}")
            base = _ARG_REF.sub(lambda m: global_args[m.group(1) or m.group(2)], base)
            stages.append(ContainerStage(base, name))
        elif not stages:
            if instruction != "ARG":
                raise ValueError(f"{instruction} before the first FROM")
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((instruction, args))
    return global_args, stages


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD; shell form is refused."""
    value = json.loads(args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not the exec form: {args!r}")
    return value


def env_pairs(args: str) -> list[tuple[str, str]]:
    """ENV's ``KEY=value ...`` form (the legacy ``ENV KEY value`` form is refused)."""
    pairs = []
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"use ENV KEY=value, not {args!r}")
        pairs.append((key, value))
    return pairs


def ignored_by(patterns: list[str], path: str) -> bool:
    """Whether a .dockerignore-style pattern list excludes ``path`` (later patterns win,
    ``!`` re-includes). Enough for the patterns used in deploy/; not the full Go matcher."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        if _ignore_match(body.strip("/"), path):
            ignored = not negate
    return ignored


def _ignore_match(pattern: str, path: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        parts = path.split("/")
        return any(_ignore_match(tail, "/".join(parts[i:])) for i in range(len(parts)))
    # A pattern matches a path or any of its parent directories.
    parts = path.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))
