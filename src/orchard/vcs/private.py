"""orchard's own repository: the git directory that task worktrees, the worktree pool and the merge queue use, kept
apart from the user's so that nothing an agent does with git reaches the user's config, hooks, refs, stash or
reflogs.

It is a bare repository (`.orchard/git`) whose object store borrows the user's (`objects/info/alternates`: read,
never written or pruned) and holds only what runs create. Its config, hooks and info are orchard's: `restore` puts
back whatever an agent changed there. The user's repository receives refs only through `publish`: the objects
fetched, then every ref moved in one transaction from the value orchard last saw.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchard.errors import GitError
from orchard.vcs.git import FALLBACK_IDENT, Repo, _git

# Files of orchard's repository whose content orchard decides; anything else in `hooks/` and `info/`, and these
# files at the top (each would change what git reads: a shallow boundary, grafts, a redirected common dir) go.
_FOREIGN = ("shallow", "commondir", "gitdir", "config.worktree", "objects/info/http-alternates")
_EXCLUDE = b"# orchard: agents' own working files never reach a commit\n.aider*\n"


@dataclass(frozen=True)
class OwnRepository:
    """orchard's repository beside one user repository, and the content its orchard-owned files must have."""

    repo: Repo
    user: Repo
    files: tuple[tuple[str, bytes], ...]  # path relative to the git directory → exact content
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)  # worker threads restore

    @property
    def root(self) -> Path:
        return self.repo.git_dir

    def restore(self) -> list[str]:
        """Put back what is not as orchard wrote it: config, HEAD, info, alternates, hooks, foreign files. Returns
        what was repaired (empty when nothing was touched); a few small reads when nothing was."""
        with self.lock:
            return self._restore()

    def _restore(self) -> list[str]:
        repaired = [name for name, content in self.files if _rewrite(self.root / name, content)]
        for name in _FOREIGN:
            if _remove(self.root / name):
                repaired.append(name)
        for folder, keep in (("hooks", ()), ("info", ("exclude", "attributes", "refs"))):  # gc writes info/refs
            repaired += [f"{folder}/{entry}" for entry in _empty_dir(self.root / folder, keep)]
        return repaired


def lock_files(git_dir: Path, *, under: tuple[str, ...] = ("",)) -> list[Path]:
    """The `*.lock` files in `git_dir`, below each of `under` (a directory or one lock file's name); the object
    store is not searched."""
    found: list[Path] = []
    for start in under:
        top = git_dir / start
        if top.name.endswith(".lock"):
            found += [top] if top.is_file() else []
            continue
        for root, dirs, files in os.walk(top):
            if Path(root) == git_dir:
                dirs[:] = [d for d in dirs if d != "objects"]
            found += [Path(root) / name for name in files if name.endswith(".lock")]
    return sorted(found)


def remove_stale_locks(own: OwnRepository) -> list[str]:
    """Remove every lock file in orchard's repository; returns their paths (relative). Only at the start of a
    session, which holds the run lock: no live git of orchard's can hold them, so each was left by a killed one
    (and would make every later update of its ref fail)."""
    removed = []
    for path in lock_files(own.root):
        if _remove(path):
            removed.append(str(path.relative_to(own.root)))
    return removed


def user_locks(user: Repo) -> list[Path]:
    """Lock files in the user's repository on what orchard writes there (its branches, packed refs): not orchard's
    to remove, since a git of the user's may hold them, but a publish fails while they are there."""
    return lock_files(user.git_dir, under=("packed-refs.lock", "refs/heads/orchard"))


def open_own_repository(user: Repo, path: Path) -> OwnRepository:
    """orchard's repository at `path` for the user's repository `user`, created if missing and restored."""
    files = _owned_files(user)
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags", "hooks", "info", "worktrees"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    own = OwnRepository(Repo(root=path, git_dir=path), user, files)
    own.restore()
    return own


def _owned_files(user: Repo) -> tuple[tuple[str, bytes], ...]:
    """The content of each file orchard owns: a config of its own (the user's object format and identity, no
    hooks, no fsmonitor), HEAD, the alternates line borrowing the user's objects, orchard's excludes."""
    fmt = _git(user, "rev-parse", "--show-object-format").stdout.strip() or "sha1"
    name, email = _identity(user)
    config = "".join((
        "[core]\n",
        f"\trepositoryformatversion = {0 if fmt == 'sha1' else 1}\n",
        "\tbare = true\n\tfilemode = true\n\tlogAllRefUpdates = false\n",
        "\tfsmonitor = false\n\thooksPath = /dev/null\n",
        f"[extensions]\n\tobjectFormat = {fmt}\n" if fmt != "sha1" else "",
        # the user's repository fetches results from here by object id (`publish`)
        "[uploadpack]\n\tallowAnySHA1InWant = true\n",
        "[gc]\n\tauto = 0\n",
        f"[user]\n\tname = {_quoted(name)}\n\temail = {_quoted(email)}\n",
    ))
    objects = (user.git_dir / "objects").resolve()
    return (("config", config.encode()), ("HEAD", b"ref: refs/heads/main\n"),
            ("objects/info/alternates", f"{objects}\n".encode()), ("info/exclude", _EXCLUDE),
            ("info/attributes", b""))


def _identity(user: Repo) -> tuple[str, str]:
    """The committer identity the user's git would use (config or environment), else orchard's fallback."""
    proc = _git(user, "var", "GIT_COMMITTER_IDENT", check=False)
    text = proc.stdout.strip()
    if proc.returncode == 0 and "<" in text and ">" in text:
        name, _, rest = text.partition(" <")
        return name.strip(), rest.partition(">")[0]
    return FALLBACK_IDENT[1].partition("=")[2], FALLBACK_IDENT[3].partition("=")[2]


def _quoted(value: str) -> str:
    """A git config value in double quotes, so no character of a name or address can end the line or the value."""
    cleaned = "".join(c for c in value if c >= " " and c != "\x7f")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rewrite(path: Path, content: bytes) -> bool:
    """Make `path` a regular file holding exactly `content`; True if it had to be (re)written."""
    try:
        if not path.is_symlink() and path.read_bytes() == content:
            return False
    except OSError:
        pass
    _remove(path)
    tmp = path.with_name(f"{path.name}.orchard-{os.getpid()}")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    return True


def _remove(path: Path) -> bool:
    """Remove a file, link or directory tree; True if there was one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _empty_dir(folder: Path, keep: tuple[str, ...]) -> list[str]:
    """Remove every entry of `folder` not named in `keep`; returns the names removed."""
    try:
        entries = [e for e in os.listdir(folder) if e not in keep]
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        return []
    for entry in entries:
        _remove(folder / entry)
    return entries


# --- the user's copies ---------------------------------------------------------------------------------


def ref_values(repo: Repo, *patterns: str) -> dict[str, str]:
    """Every ref matching `patterns` (full names, or prefixes such as `refs/heads/orchard/<run>/`) and the object it
    points at, in one git process."""
    out = _git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "--", *patterns).stdout
    return {name: oid for oid, _, name in (line.partition(" ") for line in out.splitlines())}


def publish(own: OwnRepository, refs: Mapping[str, str | None], *, current: Mapping[str, str] | None = None) -> int:
    """Make the user's refs say what `refs` says (None: delete it), fetching the objects they need from orchard's
    repository; returns how many refs changed. `current` is what the caller read of the user's refs (else read).

    One `fetch` of the missing objects by id (nothing else of orchard's repository reaches the user's), then one
    `update-ref` transaction from the values read: a ref someone moved meanwhile makes the whole update fail."""
    user = own.user
    seen = dict(current) if current is not None else ref_values(user, *refs) if refs else {}
    changes = {ref: oid for ref, oid in refs.items() if seen.get(ref) != oid}
    if not changes:
        return 0
    wanted = _missing(user, sorted({oid for oid in changes.values() if oid}))
    if wanted:
        _git(user, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
             "--end-of-options", str(own.root), *wanted)
    lines = []
    for ref, oid in sorted(changes.items()):
        old = seen.get(ref)
        if oid is None:
            lines.append(f"delete {ref} {old}\n")
        else:
            lines.append(f"update {ref} {oid} {old or ''}\n" if old else f"create {ref} {oid}\n")
    proc = _git(user, "update-ref", "-m", "orchard: publish", "--stdin", input="".join(lines), check=False)
    if proc.returncode != 0:
        raise GitError(proc.args[1:], proc.returncode, proc.stderr)
    return len(changes)


def _missing(repo: Repo, oids: list[str]) -> list[str]:
    """The objects of `oids` that `repo` does not have (a run's base is there already: nothing to fetch)."""
    if not oids:
        return []
    out = _git(repo, "cat-file", "--batch-check=%(objectname)", input="".join(f"{o}\n" for o in oids)).stdout
    return [line.split()[0] for line in out.splitlines() if line.endswith(" missing")]
