"""A chain of commits written as one git pack of our own, each changed folder as a small delta.

``git fast-import`` writes every folder a commit changes in full: it sorts and formats all of
the folder's entries again, so when 10,000 jobs each add a folder to ``out/``, the 10,000th
commit costs as much as formatting 10,000 entries, and a drain of many jobs into a big
dataset grows slower commit by commit. Here a folder's entries stay sorted in memory
between commits; a commit that changes a few entries writes the folder as a delta against
its previous version in the same pack ("copy the bytes before, insert the new entries, copy
the bytes after"), so a commit costs little more than hashing the folders it touches. Every
``MAX_DELTA_DEPTH`` versions a folder is written in full, so that git never has to apply a
long chain of deltas to read one. The pack's index is ours too (see :func:`install_pack`).

The commits reference blobs already in the object store (the index holds them); trees and
commits are new. :func:`write_blobs` packs small blobs the same way (the symlinks of annexed
files, which ``git update-index`` would write as one loose object each). SHA-1 repositories
only (:func:`uses_sha1`; callers fall back to git's own writers otherwise).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from datalad_slurm.git.runner import GitError, run_git

#: commits to write, oldest first: each a message and the changes it makes to its parent's tree
CommitChain = Sequence[tuple[str, Sequence["Change"]]]

#: what the names of our packs start with while they are written (a killed writer's are
#: removed by :func:`datalad_slurm.jobs.statedir.clear_interrupted_writes`)
TMP_PACK_PREFIX = "tmp_datalad_slurm_"
#: versions of a folder written as deltas before one is written in full again
MAX_DELTA_DEPTH = 50
#: zlib level for what we write; ``git gc`` recompresses at git's own level later
COMPRESSION = 1

_COMMIT, _TREE, _BLOB, _OFS_DELTA = 1, 2, 3, 6
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


class _ObjectReader:
    """Objects of the repository through one ``git cat-file --batch``."""

    def __init__(self, repo: str) -> None:
        self.repo = repo
        self.proc: subprocess.Popen[bytes] | None = None

    def read(self, sha: str) -> tuple[bytes, bytes]:
        """(type, content) of an object."""
        if self.proc is None:
            self.proc = subprocess.Popen(
                ["git", "cat-file", "--batch"],
                cwd=self.repo,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(sha.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        if len(header) != 3:
            raise GitError(f"object {sha} is missing from {self.repo}")
        size = int(header[2])
        content = self.proc.stdout.read(size + 1)[:size]
        return header[1], content

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait()
            self.proc = None


def _varint(number: int) -> bytes:
    """A delta's size field: seven bits at a time, lowest first."""
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _copy(offset: int, size: int) -> bytes:
    """Delta instructions copying ``size`` bytes from ``offset`` of the base."""
    out = bytearray()
    while size:
        step = min(size, 0x10000)
        op = 0x80
        args = bytearray()
        for shift in range(4):
            byte = (offset >> (8 * shift)) & 0xFF
            if byte:
                op |= 1 << shift
                args.append(byte)
        if step != 0x10000:  # a size of zero means 0x10000
            for shift in range(3):
                byte = (step >> (8 * shift)) & 0xFF
                if byte:
                    op |= 1 << (4 + shift)
                    args.append(byte)
        out.append(op)
        out += args
        offset += step
        size -= step
    return bytes(out)


def _insert(data: bytes) -> bytes:
    out = bytearray()
    for start in range(0, len(data), 127):
        piece = data[start : start + 127]
        out.append(len(piece))
        out += piece
    return bytes(out)


def make_delta(base_size: int, new: bytes, head: int, tail: int) -> bytes:
    """The delta turning a base into ``new`` when both share ``head`` leading and ``tail``
    trailing bytes."""
    middle_end = len(new) - tail
    return b"".join(
        [
            _varint(base_size),
            _varint(len(new)),
            _copy(0, head),
            _insert(new[head:middle_end]),
            _copy(base_size - tail, tail),
        ]
    )


def object_sha(kind: bytes, data: bytes) -> bytes:
    digest = hashlib.sha1(b"%s %d\0" % (kind, len(data)))
    digest.update(data)
    return digest.digest()


class PackBuilder:
    """Objects appended to a pack in memory; ``finish`` adds header and checksum."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 12  # after the header
        #: (sha, offset, CRC-32 of the packed bytes) of every object, for the pack's index
        self.objects: list[tuple[bytes, int, int]] = []

    @staticmethod
    def _header(kind: int, size: int) -> bytearray:
        out = bytearray([(kind << 4) | (size & 0x0F)])
        size >>= 4
        while size:
            out[-1] |= 0x80
            out.append(size & 0x7F)
            size >>= 7
        return out

    def add(self, kind: int, data: bytes, sha: bytes) -> int:
        """Append a whole object; returns its offset."""
        return self._append(self._header(kind, len(data)), data, sha)

    def add_delta(self, base_offset: int, delta: bytes, sha: bytes) -> int:
        """Append a delta against the object at ``base_offset``; returns its offset."""
        header = self._header(_OFS_DELTA, len(delta))
        distance = self.offset - base_offset
        encoded = bytearray([distance & 0x7F])
        distance >>= 7
        while distance:
            distance -= 1
            encoded.insert(0, 0x80 | (distance & 0x7F))
            distance >>= 7
        return self._append(header + encoded, delta, sha)

    def _append(self, header: bytes | bytearray, data: bytes, sha: bytes) -> int:
        at = self.offset
        compressed = zlib.compress(data, COMPRESSION)
        self.parts += [bytes(header), compressed]
        self.offset += len(header) + len(compressed)
        self.objects.append((sha, at, zlib.crc32(compressed, zlib.crc32(header))))
        return at

    def finish(self) -> bytes:
        count = len(self.objects).to_bytes(4, "big")
        body = b"".join([b"PACK", (2).to_bytes(4, "big"), count, *self.parts])
        return body + hashlib.sha1(body).digest()

    def index(self, pack_checksum: bytes) -> bytes:
        """The pack's index (version 2), what ``git index-pack`` would write for it."""
        ordered = sorted(self.objects)
        fanout = [0] * 256
        for sha, _, _ in ordered:
            fanout[sha[0]] += 1
        total = 0
        counts = []
        for count in fanout:
            total += count
            counts.append(total.to_bytes(4, "big"))
        small: list[bytes] = []
        large: list[bytes] = []
        for _, offset, _ in ordered:
            if offset < 0x80000000:
                small.append(offset.to_bytes(4, "big"))
            else:
                small.append((0x80000000 | len(large)).to_bytes(4, "big"))
                large.append(offset.to_bytes(8, "big"))
        body = b"".join(
            [
                b"\xfftOc",
                (2).to_bytes(4, "big"),
                *counts,
                *(sha for sha, _, _ in ordered),
                *(crc.to_bytes(4, "big") for _, _, crc in ordered),
                *small,
                *large,
                pack_checksum,
            ]
        )
        return body + hashlib.sha1(body).digest()


def install_pack(repo: str, pack: PackBuilder) -> None:
    """Put the pack and its index where git finds them, as ``git index-pack`` does.

    Index-pack would inflate and hash every object again (with git's collision-detecting
    SHA-1, about half of the cost of writing the commits); the objects' shas are ours already.
    With ``core.sharedRepository`` set, index-pack writes them, so that their modes are git's.
    """
    data = pack.finish()
    shared = run_git(repo, "config", "--get", "core.sharedRepository", check=False).strip()
    if shared:
        proc = subprocess.run(
            ["git", "index-pack", "--stdin"], cwd=repo, input=data, capture_output=True, check=False
        )
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace")
            raise GitError(f"git index-pack failed in {repo}: {message}")
        return
    folder = os.path.join(repo, run_git(repo, "rev-parse", "--git-path", "objects/pack").strip())
    name = os.path.join(folder, f"pack-{data[-20:].hex()}")
    # the pack before its index: git looks for packs by their index
    for suffix, content in ((".pack", data), (".idx", pack.index(data[-20:]))):
        handle, temporary = tempfile.mkstemp(prefix=TMP_PACK_PREFIX, dir=folder)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(content)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o444)
            os.rename(temporary, name + suffix)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise


class TreeEditor:
    """The trees of a commit and its descendants, edited in memory and written into a pack."""

    def __init__(self, reader: _ObjectReader, pack: PackBuilder, root_tree: str) -> None:
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
            folder.written_at = self.pack.add(_TREE, data, sha)
            folder.depth = 0
        self.written[sha] = (folder.written_at, folder.depth)
        folder.written_size = len(data)
        folder.touched.clear()
        folder.sha = sha
        return folder.sha


def uses_sha1(repo: str) -> bool:
    """Whether the repository's objects are named by SHA-1 (what this module writes)."""
    return run_git(repo, "rev-parse", "--show-object-format", check=False).strip() == "sha1"


def write_blobs(repo: str, contents: Iterable[bytes]) -> None:
    """Write blobs (small ones: symlink targets) into the repository as one pack.

    ``git update-index --add`` would write each as a loose object: 30,000 files for 10,000
    jobs' annexed outputs, seconds to write, and enough to make git's next auto maintenance
    repack the repository.
    """
    pack = PackBuilder()
    seen: set[bytes] = set()
    for content in contents:
        sha = object_sha(b"blob", content)
        if sha not in seen:
            seen.add(sha)
            pack.add(_BLOB, content, sha)
    if seen:
        install_pack(repo, pack)


def commit_tree(reader: _ObjectReader, commit: str) -> str:
    kind, content = reader.read(commit)
    if kind != b"commit" or not content.startswith(b"tree "):
        raise GitError(f"{commit} is not a commit")
    return content[5:45].decode()


def write_pack(
    repo: str, parent: str, commits: CommitChain, author: bytes, committer: bytes
) -> list[str]:
    """Write the chain of commits on top of ``parent`` as one pack; returns their shas."""
    reader = _ObjectReader(repo)
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
            pack.add(_COMMIT, body, commit)
            previous = commit.hex()
            shas.append(previous)
    finally:
        reader.close()
    if not shas:
        return []
    install_pack(repo, pack)
    check = subprocess.run(
        ["git", "cat-file", "-t", shas[-1]], cwd=repo, capture_output=True, check=False
    )
    if check.stdout.strip() != b"commit":
        raise GitError(f"the pack written in {repo} lacks commit {shas[-1]}")
    return shas
