"""A Griffe extension: the Sphinx roles of repspace's docstrings as cross-references.

The docstrings are numpydoc and name other objects with Sphinx roles (``:func:`name```,
``:class:`~repspace.errors.InputError```). Markdown has no roles, so this extension rewrites
each one into an optional autoref: a link where the object is rendered on some page, plain code
where it is not. A role that names no object (a ``repspace.`` path that does not exist, or a
bare name that is neither in scope nor a builtin) is a warning, and so an error under
``mkdocs build --strict``. Objects of other packages (``torch.device``) become plain code.
The reST marker of a literal block (a line ending in ``::``) becomes a colon: the indented
block after it is already a code block in Markdown.
"""

from __future__ import annotations

import builtins
import logging
import re

import griffe

_log = logging.getLogger("mkdocs.plugins.repspace_roles")
_ROLE = re.compile(r":(func|meth|class|mod|attr|data|exc|obj):`(?P<tilde>~?)(?P<target>[^`]+)`")
_LITERAL = re.compile(r"(?<=\S)::$", flags=re.MULTILINE)
_PACKAGE = "repspace"


def _canonical(pkg: griffe.Module, path: str) -> str | None:
    """The canonical path of the object at ``path`` (``repspace.x.y``), or ``None``."""
    try:
        found = pkg if path == pkg.path else pkg[path.removeprefix(pkg.path + ".")]
        return found.canonical_path
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _resolve(obj: griffe.Object, target: str, pkg: griffe.Module) -> tuple[str | None, bool]:
    """(canonical path, known) of ``target`` as named in ``obj``'s docstring: the path is
    ``None`` for an object outside repspace (then ``known`` says whether it exists: a builtin,
    an imported name, a dotted name of another package) or one that does not exist."""
    if target.startswith(_PACKAGE + "."):
        path = _canonical(pkg, target)
        return path, path is not None
    head, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:  # the object's own members, then each enclosing scope's
        member = scope.members.get(head)
        if member is not None:
            if member.is_alias and not member.target_path.startswith(_PACKAGE + "."):
                return None, True  # imported from another package
            path = _canonical(pkg, f"{member.path}.{rest}" if rest else member.path)
            return path, path is not None
        scope = scope.parent
    return None, hasattr(builtins, head) or "." in target


class SphinxRoles(griffe.Extension):
    """Rewrite the roles (and literal-block markers) of every docstring of the package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: object) -> None:
        if pkg.name == _PACKAGE:
            self._walk(pkg, pkg)

    def _walk(self, obj: griffe.Object, pkg: griffe.Module) -> None:
        if obj.docstring is not None:
            text = _LITERAL.sub(":", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(lambda m: self._link(m, obj, pkg), text)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, pkg)

    @staticmethod
    def _link(match: re.Match, obj: griffe.Object, pkg: griffe.Module) -> str:
        target = match["target"]
        title = target.rsplit(".", 1)[-1] if match["tilde"] else target
        path, known = _resolve(obj, target, pkg)
        if path is None:
            if not known:
                _log.warning("%s: the docstring names %r, which is no object", obj.path, target)
            return f"``{title}``"
        return f'<autoref identifier="{path}" optional><code>{title}</code></autoref>'
