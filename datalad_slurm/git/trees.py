"""Trees edited in memory, and a chain of commits written through them as one pack of ours.

``git fast-import`` writes every folder a commit changes in full: it sorts and formats all of
the folder's entries again, so when 10,000 jobs each add a folder to ``out/``, the 10,000th
commit costs as much as formatting 10,000 entries, and a drain of many jobs into a big
dataset grows slower commit by commit. Here a folder's entries stay sorted in memory
between commits; a commit that changes a few entries writes the folder as a delta against
its previous version in the same pack ("copy the bytes before, insert the new entries, copy
the bytes after"), so a commit costs little more than hashing the folders it touches. Every
``MAX_DELTA_DEPTH`` versions a folder is written in full, so that git never has to apply a
long chain of deltas to read one. The pack format itself is :mod:`datalad_slurm.git.pack`.

The commits reference blobs already in the object store (the index holds them); trees and
commits are new.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from datalad_slurm.git.catfile import ObjectReader
from datalad_slurm.git.pack import COMMIT, TREE, PackBuilder, install_pack, make_delta, object_sha
from datalad_slurm.git.runner import GitError, run_git

#: commits to write, oldest first: each a message and the changes it makes to its parent's tree
CommitChain = Sequence[tuple[str, Sequence["Change"]]]
#: versions of a folder written as deltas before one is written in full again
MAX_DELTA_DEPTH = 50

_TREE_MODE = b"40000"


@dataclass(frozen=True)
class Change:
    """One staged difference to HEAD: a new blob (mode and sha) or a deletion."""

    path: str
    mode: str | None = None
    sha: str | None = None

    @property
    def deleted(self) -> bool:
        return self.sha is None


#: entries per block of a folder's sorted entries (a block is split when twice as big)
BLOCK = 64


class _Block:
    """A run of a folder's entries: sort keys, their bytes, and the bytes joined once."""

    __slots__ = ("chunks", "joined", "keys", "size")

    def __init__(self, keys: list[bytes], chunks: list[bytes]) -> None:
        self.keys = keys
        self.chunks = chunks
        self.size = sum(map(len, chunks))
        self.joined: bytes | None = None

    def data(self) -> bytes:
        if self.joined is None:
            self.joined = b"".join(self.chunks)
        return self.joined


class SortedEntries:
    """A tree's entries in git's order, kept in blocks so that an edit, the bytes before it
    and the whole tree's bytes cost little more than the blocks it touches."""

    def __init__(self, keys: list[bytes] | None = None, chunks: list[bytes] | None = None):
        keys = keys or []
        chunks = chunks or []
        self.blocks = [
            _Block(keys[start : start + BLOCK], chunks[start : start + BLOCK])
            for start in range(0, max(len(keys), 1), BLOCK)
        ]
        #: the first key of every block but the first (where to look for a key)
        self.bounds = [block.keys[0] for block in self.blocks[1:]]

    def _find(self, key: bytes) -> tuple[int, int, bool]:
        """(block, position in it, whether the key is there)."""
        number = bisect_right(self.bounds, key)
        keys = self.blocks[number].keys
        index = bisect_left(keys, key)
        return number, index, index < len(keys) and keys[index] == key

    def get(self, key: bytes) -> bytes | None:
        number, index, found = self._find(key)
        return self.blocks[number].chunks[index] if found else None

    def set(self, key: bytes, chunk: bytes) -> None:
        number, index, found = self._find(key)
        block = self.blocks[number]
        if found:
            block.size -= len(block.chunks[index])
            block.chunks[index] = chunk
        else:
            block.keys.insert(index, key)
            block.chunks.insert(index, chunk)
        block.size += len(chunk)
        block.joined = None
        if len(block.keys) > 2 * BLOCK:
            half = len(block.keys) // 2
            upper = _Block(block.keys[half:], block.chunks[half:])
            del block.keys[half:], block.chunks[half:]
            block.size -= upper.size
            self.blocks.insert(number + 1, upper)
            self.bounds.insert(number, upper.keys[0])

    def remove(self, key: bytes) -> bool:
        number, index, found = self._find(key)
        if not found:
            return False
        block = self.blocks[number]
        block.size -= len(block.chunks[index])
        del block.keys[index], block.chunks[index]
        block.joined = None
        if not block.keys and len(self.blocks) > 1:
            del self.blocks[number]
            del self.bounds[max(number - 1, 0)]
        elif index == 0 and number > 0:
            self.bounds[number - 1] = block.keys[0]
        return True

    def is_empty(self) -> bool:
        return all(not block.keys for block in self.blocks)

    def data(self) -> bytes:
        return b"".join(block.data() for block in self.blocks)

    def size(self) -> int:
        return sum(block.size for block in self.blocks)

    def bytes_before(self, key: bytes) -> int:
        """The length of the entries that sort before ``key``."""
        number, index, _ = self._find(key)
        block = self.blocks[number]
        return sum(b.size for b in self.blocks[:number]) + sum(map(len, block.chunks[:index]))

    def bytes_after(self, key: bytes) -> int:
        """The length of the entries that sort after ``key``."""
        number, index, found = self._find(key)
        block = self.blocks[number]
        if found:
            index += 1
        later = sum(b.size for b in self.blocks[number + 1 :])
        return later + sum(map(len, block.chunks[index:]))


@dataclass
class _Folder:
    """A tree being edited, with what changed since it was last written."""

    entries: SortedEntries = field(default_factory=SortedEntries)
    #: subfolders read or made so far, by name
    children: dict[bytes, _Folder] = field(default_factory=dict)
    #: names of children changed since this folder was last written
    dirty_children: set[bytes] = field(default_factory=set)
    #: sort keys (the name, "/" appended for a folder) set or removed since the last write
    touched: set[bytes] = field(default_factory=set)
    #: the length of this folder's bytes as last written into the pack (None: not written yet)
    written_size: int | None = None
    written_at: int = 0
    depth: int = 0
    #: the sha (binary) of this folder's last version, in the pack or in the repository
    sha: bytes | None = None

    def set(self, key: bytes, chunk: bytes) -> None:
        self.entries.set(key, chunk)
        self.touched.add(key)

    def remove(self, key: bytes) -> bool:
        if self.entries.remove(key):
            self.touched.add(key)
            return True
        return False

    def unchanged_bytes(self) -> tuple[int, int]:
        """Lengths of the leading and trailing bytes no change since the last write touched."""
        return (
            self.entries.bytes_before(min(self.touched)),
            self.entries.bytes_after(max(self.touched)),
        )


def parse_tree(data: bytes) -> _Folder:
    """A folder from a tree object's content."""
    keys = []
    chunks = []
    position = 0
    while position < len(data):
        space = data.index(b" ", position)
        nul = data.index(b"\0", space)
        end = nul + 21
        name = data[space + 1 : nul]
        is_tree = data[position:space] == _TREE_MODE
        keys.append(name + b"/" if is_tree else name)
        chunks.append(data[position:end])
        position = end
    # git writes trees sorted; a hand-made tree might not be, and bisect needs it sorted
    if keys != sorted(keys):
        pairs = sorted(zip(keys, chunks, strict=True))
        keys = [key for key, _ in pairs]
        chunks = [chunk for _, chunk in pairs]
    return _Folder(SortedEntries(keys, chunks))


class TreeEditor:
    """The trees of a commit and its descendants, edited in memory and written into a pack."""

    def __init__(self, reader: ObjectReader, pack: PackBuilder, root_tree: str) -> None:
        self.reader = reader
        self.pack = pack
        #: trees in the pack: sha -> (offset, length of its delta chain); no object twice
        self.written: dict[bytes, tuple[int, int]] = {}
        self.root = self._load(root_tree)

    def _load(self, sha: str) -> _Folder:
        kind, content = self.reader.read(sha)
        if kind != b"tree":
            raise GitError(f"object {sha} is a {kind.decode()}, not a tree")
        folder = parse_tree(content)
        folder.sha = bytes.fromhex(sha)
        return folder

    def _child(self, folder: _Folder, name: bytes, create: bool) -> _Folder | None:
        child = folder.children.get(name)
        if child is not None:
            return child
        chunk = folder.entries.get(name + b"/")
        if chunk is not None:
            child = self._load(chunk[-20:].hex())
        elif create:
            folder.remove(name)  # a file where a folder is to be
            child = _Folder()
            folder.dirty_children.add(name)
        else:
            return None
        folder.children[name] = child
        return child

    def apply(self, entry: Change) -> None:
        *folders, name = entry.path.encode("utf-8", "surrogateescape").split(b"/")
        chain = [self.root]
        for part in folders:
            child = self._child(chain[-1], part, create=entry.sha is not None)
            if child is None:
                return  # removing something below a folder that is not there
            chain.append(child)
        leaf = chain[-1]
        if entry.sha is None:
            changed = leaf.remove(name)
        else:
            assert entry.mode is not None
            if leaf.remove(name + b"/"):  # a folder where a file is to be
                leaf.children.pop(name, None)
                leaf.dirty_children.discard(name)
            leaf.set(name, b"%s %s\0%s" % (entry.mode.encode(), name, bytes.fromhex(entry.sha)))
            changed = True
        if changed:
            for parent, part in zip(chain, folders, strict=False):
                parent.dirty_children.add(part)

    def write(self) -> bytes:
        """Write every changed folder; returns the root tree's sha (binary)."""
        sha = self._write(self.root)
        assert sha is not None
        return sha

    def _write(self, folder: _Folder, is_root: bool = True) -> bytes | None:
        for name in sorted(folder.dirty_children):
            child = folder.children.get(name)
            if child is None:
                continue
            sha = self._write(child, is_root=False)
            if sha is None:  # git keeps no empty folders
                folder.remove(name + b"/")
                del folder.children[name]
            else:
                folder.set(name + b"/", b"%s %s\0%s" % (_TREE_MODE, name, sha))
        folder.dirty_children.clear()
        if not folder.touched:
            return folder.sha
        if not is_root and folder.entries.is_empty():
            folder.touched.clear()
            folder.written_size, folder.sha = None, None
            return None
        data = folder.entries.data()
        sha = object_sha(b"tree", data)
        known = self.written.get(sha)
        if known is not None:  # the same folder again (two jobs wrote equal files): once only
            folder.written_at, folder.depth = known
        elif folder.written_size is not None and folder.depth < MAX_DELTA_DEPTH:
            head, tail = folder.unchanged_bytes()
            delta = make_delta(folder.written_size, data, head, tail)
            folder.written_at = self.pack.add_delta(folder.written_at, delta, sha)
            folder.depth += 1
        else:
            folder.written_at = self.pack.add(TREE, data, sha)
            folder.depth = 0
        self.written[sha] = (folder.written_at, folder.depth)
        folder.written_size = len(data)
        folder.touched.clear()
        folder.sha = sha
        return folder.sha


def commit_tree(reader: ObjectReader, commit: str) -> str:
    kind, content = reader.read(commit)
    if kind != b"commit" or not content.startswith(b"tree "):
        raise GitError(f"{commit} is not a commit")
    return content[5:45].decode()


def write_pack(
    repo: str, parent: str, commits: CommitChain, author: bytes, committer: bytes
) -> list[str]:
    """Write the chain of commits on top of ``parent`` as one pack; returns their shas."""
    reader = ObjectReader(repo)
    try:
        pack = PackBuilder()
        editor = TreeEditor(reader, pack, commit_tree(reader, parent))
        shas: list[str] = []
        previous = parent
        for message, entries in commits:
            # removals first: a file replaced by a folder of the same name, or the reverse
            for entry in sorted(entries, key=lambda e: e.sha is not None):
                editor.apply(entry)
            tree = editor.write()
            body = b"tree %s\nparent %s\nauthor %s\ncommitter %s\n\n%s" % (
                tree.hex().encode(),
                previous.encode(),
                author,
                committer,
                message.encode("utf-8", "surrogateescape"),
            )
            commit = object_sha(b"commit", body)
            pack.add(COMMIT, body, commit)
            previous = commit.hex()
            shas.append(previous)
    finally:
        reader.close()
    if not shas:
        return []
    install_pack(repo, pack)
    if run_git(repo, "cat-file", "-t", shas[-1], check=False).strip() != "commit":
        raise GitError(f"the pack written in {repo} lacks commit {shas[-1]}")
    return shas
